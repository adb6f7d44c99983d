"""`cnnlab predict ckpt=<run or .pt> inputs=<image, folder or glob>`: classify image files with a trained model."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_predict_config
from cnnlab.tasks.common import run_task


def predict_task(cfg: DictConfig, run_dir: Path) -> float | None:
    validate_predict_config(cfg)
    from cnnlab.inference.predict import predict_images

    return predict_images(cfg, run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_task(predict_task, cfg)
