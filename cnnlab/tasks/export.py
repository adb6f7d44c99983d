"""`cnnlab export ckpt=<run or .pt> format=onnx|torchscript|exported`: a trained model as a checked file."""

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_export_config
from cnnlab.tasks.common import run_task


def export_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    validate_export_config(cfg)
    from cnnlab.inference.export import export_checkpoint

    return export_checkpoint(cfg, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, Any]:
    return run_task(export_task, cfg)
