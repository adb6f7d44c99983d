"""`cnnlab train`: one training run, or one job of `cnnlab -m` sweeps."""

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.tasks.common import run_task
from cnnlab.training.run import train


@hydra.main(config_path="pkg://cnnlab.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(train, cfg)
