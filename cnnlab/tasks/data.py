"""`cnnlab data dataset=<name>`: class counts, image statistics and sample images, before any training."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import check_dataset_root
from cnnlab.errors import UserError
from cnnlab.tasks.common import run_task


def check_config(cfg: DictConfig) -> None:
    """Fail on a bad value in well under a second, before torch and the data set are loaded."""
    check_dataset_root(cfg.dataset)
    per_class = cfg.samples_per_class
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise UserError(
            f"samples_per_class={per_class!r} is invalid: must be a whole number > 0 (for example samples_per_class=8)"
        )


def data_task(cfg: DictConfig, run_dir: Path) -> None:
    check_config(cfg)
    from cnnlab.data.overview import write_overview

    write_overview(cfg.dataset, cfg.samples_per_class, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_task(data_task, cfg)
