"""`cnnlab lr-find [overrides]`: the learning-rate range test (cnnlab.training.lr_find)."""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_lr_find_config
from cnnlab.tasks.common import run_task

log = logging.getLogger("cnnlab")


def lr_find_task(cfg: DictConfig, run_dir: Path) -> float:
    validate_lr_find_config(cfg)  # before torch is imported: a typo fails in well under a second
    from cnnlab.training.lr_find import lr_find

    test = lr_find(cfg, run_dir)
    low, high = test.search_range
    log.info(
        "lowest smoothed loss %.3f at lr %.2g after %d steps; suggested lr %.2g",
        test.smoothed[test.best_index],
        test.min_loss_lr,
        len(test.lrs),
        test.suggestion,
    )
    log.info("train with:   cnnlab train lr=%.2g", test.suggestion)
    log.info("or search:    cnnlab -m sweeper=tpe 'lr=tag(log,interval(%.2g,%.2g))'", low, high)
    log.info("lr_find.csv and lr_find.png written to %s", run_dir)
    return test.suggestion


@hydra.main(config_path="pkg://cnnlab.conf", config_name="lr_find", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(lr_find_task, cfg)
