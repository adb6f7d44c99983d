"""`cnnlab train`: one training run, or one job of `cnnlab -m` sweeps."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import validate_train_config
from cnnlab.folder_lock import busy_run, exclusive
from cnnlab.run_folder import RUN_LOCK
from cnnlab.tasks.common import run_task

log = logging.getLogger("cnnlab")


def train_task(cfg: DictConfig, run_dir: Path) -> float:
    validate_train_config(cfg)  # before torch is even imported: a typo fails in well under a second
    import torch

    from cnnlab.placement import Placement
    from cnnlab.sweeps.trial import launcher_threads, pruning_rule, trial_reporting
    from cnnlab.training.launch import launch_ranks, lead_torchrun
    from cnnlab.training.run import train
    from cnnlab.training.trainer import RunDiverged

    threads = launcher_threads()
    if threads:
        torch.set_num_threads(min(threads, torch.get_num_threads()))  # a lower OMP_NUM_THREADS still wins
    placement = Placement.from_environment()  # torchrun's rank 0 (its other ranks never compose: cnnlab.cli)
    try:
        with exclusive(run_dir, RUN_LOCK, busy_run(run_dir)):
            if placement is not None:
                return lead_torchrun(cfg, run_dir, placement, threads, trial_reporting(cfg))
            if cfg.trainer.devices > 1:
                return launch_ranks(cfg, run_dir, int(cfg.trainer.devices), threads, trial_reporting(cfg))
            return train(cfg, run_dir, prune=pruning_rule(cfg))
    except RunDiverged as e:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        log.error("%s; the sweep goes on with the next run", e)  # metrics.json says "diverged"
        return float("nan")


@hydra.main(config_path="pkg://cnnlab.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return run_task(train_task, cfg)
