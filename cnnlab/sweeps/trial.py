"""The trial's side of a cnnlab sweep: report each epoch to the study and stop when its pruner says so.

The trial finds its study through storage (not through the sweeping process's memory), so this works
the same in-process, in joblib workers and in SLURM jobs. Its trial number is its Hydra job number:
the sweeper launches each trial with that number.
"""

from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

SWEEPER_TARGET = "hydra_plugins.cnnlab_sweeper.cnnlab_sweeper.CnnlabSweeper"

PruneRule = Callable[[int, dict[str, float]], bool]


def in_cnnlab_sweep() -> bool:
    """True inside a job launched by the cnnlab (Optuna) sweeper, not by Hydra's grid sweeper."""
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and hydra.sweeper.get("_target_") == SWEEPER_TARGET


def launcher_threads() -> int | None:
    """CPU threads a launcher gives each job (submitit's cpus_per_task), so parallel trials share the cores.

    joblib's workers are limited by joblib itself (cores // n_jobs); the basic launcher runs one trial at a time.
    """
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    cpus = hydra.launcher.get("cpus_per_task")
    return int(cpus) if cpus else None


def pruning_rule(cfg: DictConfig) -> PruneRule | None:
    """A rule for the trainer: after each epoch, report the metric and return True to stop (prune) the trial."""
    if not in_cnnlab_sweep() or cfg.pruner.get("_target_", "").endswith("NopPruner"):
        return None
    import optuna
    from hydra.utils import instantiate

    from cnnlab.sweeps.study import open_storage

    hydra = HydraConfig.get()
    storage = open_storage(hydra.sweeper.storage, Path(hydra.sweep.dir))
    study = optuna.load_study(study_name=hydra.sweeper.study_name, storage=storage, pruner=instantiate(cfg.pruner))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, hydra.job.num)
    trial = optuna.trial.Trial(study, trial_id)
    metric = str(hydra.sweeper.report_metric)

    def should_prune(epoch: int, metrics: dict[str, float]) -> bool:
        trial.report(float(metrics[metric]), epoch)
        return trial.should_prune()

    return should_prune
