"""`cnnlab data dataset=<name>`: class counts, image statistics and sample images (cnnlab.data.overview)."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_data_config
from cnnlab.tasks.common import run_task


def data_task(cfg: DictConfig, run_dir: Path) -> None:
    validate_data_config(cfg)  # a bad value fails in well under a second, before torch and the data load
    from cnnlab.data.overview import write_overview

    write_overview(cfg.dataset, cfg.samples_per_class, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_task(data_task, cfg)
