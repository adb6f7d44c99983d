"""`cnnlab eval ckpt=<run or .pt>`: accuracy, per-class accuracy and confusion matrix of a checkpoint."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_eval_config
from cnnlab.tasks.common import run_task


def eval_task(cfg: DictConfig, run_dir: Path) -> float:
    validate_eval_config(cfg)
    from cnnlab.inference.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(cfg, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(eval_task, cfg)
