"""`cnnlab train`: one training run, or one job of `cnnlab -m` sweeps."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_train_config
from cnnlab.tasks.common import run_task


def train_task(cfg: DictConfig, run_dir: Path) -> float:
    validate_train_config(cfg)  # before torch is even imported: a typo fails in well under a second
    from cnnlab.training.run import train

    return train(cfg, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(train_task, cfg)
