"""`cnnlab bench [overrides]`: training and inference images/s per execution variant (cnnlab.training.bench)."""

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_bench_config
from cnnlab.tasks.common import run_task


def bench_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    validate_bench_config(cfg)  # before torch is imported: a typo fails in well under a second
    from cnnlab.training.bench import bench

    return bench(cfg, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_task(bench_task, cfg)
