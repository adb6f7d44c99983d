"""The trial's side of a cnnlab sweep: report each epoch to the study and stop when its pruner says so.

The trial finds its study through storage (not through the sweeping process's memory), so this works
the same in-process, in joblib workers and in SLURM jobs. Its trial number is its Hydra job number:
the sweeper launches each trial with that number.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:  # torch is imported only once a run starts, after its config is checked
    from cnnlab.training.trainer import PruneRule

SWEEPER_TARGET = "hydra_plugins.cnnlab_sweeper.cnnlab_sweeper.CnnlabSweeper"


def in_cnnlab_sweep() -> bool:
    """True inside a job launched by the cnnlab (Optuna) sweeper, not by Hydra's grid sweeper."""
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and hydra.sweeper.get("_target_") == SWEEPER_TARGET


def available_cores() -> int:
    """Cores this process may use: its CPU affinity where the OS has one (Linux), else every core (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def launcher_threads() -> int | None:
    """CPU threads for one job of a parallel launcher, so trials running at once share the cores.

    submitit: its cpus_per_task. joblib: cores // n_jobs (joblib does the same only when OMP_NUM_THREADS
    is unset). None otherwise: the basic launcher runs one trial at a time.
    """
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    cpus = hydra.launcher.get("cpus_per_task")
    if cpus:
        return int(cpus)
    n_jobs = hydra.launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        cores = available_cores()
        in_parallel = cores if n_jobs < 0 else min(n_jobs, cores)  # joblib's -1: one job per core
        return max(1, cores // in_parallel)
    return None


def prunes(pruner: DictConfig) -> bool:
    """Whether the `pruner` config group's choice can stop trials (pruner=none cannot)."""
    return not str(pruner.get("_target_", "")).endswith("NopPruner")


def pruning_rule(cfg: DictConfig) -> "PruneRule | None":
    """A rule for the trainer: after each epoch, report the metric and return True to stop (prune) the trial."""
    if not in_cnnlab_sweep() or not prunes(cfg.pruner):
        return None
    import optuna
    from hydra.utils import instantiate

    from cnnlab.sweeps.optuna_internals import live_trial
    from cnnlab.sweeps.study import storage_for

    hydra = HydraConfig.get()
    storage = storage_for(hydra.sweeper.storage, Path(hydra.sweep.dir))
    study = optuna.load_study(study_name=hydra.sweeper.study_name, storage=storage, pruner=instantiate(cfg.pruner))
    trial = live_trial(study, hydra.job.num)
    metric = str(hydra.sweeper.report_metric)

    def should_prune(epoch: int, metrics: dict[str, float]) -> bool:
        trial.report(float(metrics[metric]), epoch)
        return trial.should_prune()

    return should_prune
