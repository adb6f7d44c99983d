"""The trial's side of a cnnlab sweep: report each epoch to the study and stop when its pruner says so.

The trial finds its study through storage (not through the sweeping process's memory), so this works
the same in-process, in joblib workers and in SLURM jobs. Its trial number is its Hydra job number:
the sweeper launches each trial with that number.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from cnnlab.placement import available_cores

if TYPE_CHECKING:  # torch is imported only once a run starts, after its config is checked
    from cnnlab.training.trainer import PruneRule

SWEEPER_TARGET = "hydra_plugins.cnnlab_sweeper.cnnlab_sweeper.CnnlabSweeper"


def in_cnnlab_sweep() -> bool:
    """True inside a job launched by the cnnlab (Optuna) sweeper, not by Hydra's grid sweeper."""
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and hydra.sweeper.get("_target_") == SWEEPER_TARGET


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


@dataclass(frozen=True)
class TrialReporting:
    """Where a search's trial reports its epochs: the study (storage, name) and the trial's number in it.

    Plain values, so a data-parallel trial's rank 0, in a process without Hydra's runtime config, can report too.
    """

    storage: str | None
    sweep_dir: Path
    study_name: str
    number: int
    metric: str

    def rule(self, pruner: DictConfig) -> "PruneRule":
        """A rule for the trainer: after each epoch, report the metric and return True to stop (prune) the trial."""
        import optuna
        from hydra.utils import instantiate

        from cnnlab.sweeps.optuna_internals import live_trial
        from cnnlab.sweeps.study import storage_for

        storage = storage_for(self.storage, self.sweep_dir)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=instantiate(pruner))
        trial = live_trial(study, self.number)

        def should_prune(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(float(metrics[self.metric]), epoch)
            return trial.should_prune()

        return should_prune


def trial_reporting(cfg: DictConfig) -> TrialReporting | None:
    """Where this run reports its epochs, when it is a trial of a search whose pruner can stop it; else None."""
    if not in_cnnlab_sweep() or not prunes(cfg.pruner):
        return None
    hydra = HydraConfig.get()
    storage = hydra.sweeper.storage
    return TrialReporting(
        None if storage in (None, "") else str(storage),
        Path(hydra.sweep.dir),
        str(hydra.sweeper.study_name),
        int(hydra.job.num),
        str(hydra.sweeper.report_metric),
    )


def pruning_rule(cfg: DictConfig) -> "PruneRule | None":
    """The pruning rule of a search's trial (None outside a search, or when its pruner cannot stop trials)."""
    reporting = trial_reporting(cfg)
    return reporting.rule(cfg.pruner) if reporting is not None else None
