"""The run folder's on-disk contract, in one place: what a run writes where, and how to read it back.

A run folder (outputs/runs/<date>/<time>_<id>/, or one trial of a sweep) holds:

    .hydra/config.yaml, overrides.yaml     Hydra's snapshot of the run's config and command-line overrides
    .hydra/resumed/                        the same for the latest resume (the original snapshot is kept)
    checkpoints/last.pt, best.pt           written by cnnlab.checkpoints.store
    metrics.json                           status, headline numbers and per-epoch history (RunStatus below)
    .run.lock                              held by the one process writing the folder (.sweep.lock for sweeps)

Training, resume, sweeps, reports and TensorBoard all meet here, so this module imports neither torch
nor optuna nor Hydra: anything may import it, and it imports only cnnlab's errors and atomic writes.
"""

import json
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from cnnlab.atomic import atomic_json_dump
from cnnlab.errors import UserError

SNAPSHOT_DIR = ".hydra"
RESUMED_SNAPSHOT_DIR = ".hydra/resumed"
OVERRIDES_FILE = "overrides.yaml"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
TRAINED_WEIGHTS = (BEST_CHECKPOINT, LAST_CHECKPOINT)  # what eval, predict and export take from a run folder
METRICS_FILE = "metrics.json"
RUN_LOCK = ".run.lock"  # a training run (fresh or resumed) writing its folder
SWEEP_LOCK = ".sweep.lock"  # a sweep process asking, launching and recording trials

# the numbers a finished run records in metrics.json, which a sweep can optimize
RUN_METRICS = (
    "best_val_acc",
    "test_acc",
    "test_loss",
    "test_acc_last",
    "train_time_s",
    "epochs_completed",
    "params",
    "macs",
    "latency_ms",
)
SWEEP_ONLY = ("sweeper", "pruner", "launcher")  # config groups that mean nothing to a single run


class RunStatus(str, Enum):
    """metrics.json's "status": what a run, a sweep's bookkeeping and the report agree a run is doing."""

    RUNNING = "running"  # started (or killed without a word: its folder lock is free again)
    COMPLETED = "completed"  # trained and tested
    PRUNED = "pruned"  # stopped early by a search's pruner
    DIVERGED = "diverged"  # the loss went NaN/inf or exploded
    FAILED = "failed"  # stopped by an error
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM; resumable from checkpoints/last.pt

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_final(self) -> bool:
        """Ended for good: a sweep records it and never runs it again."""
        return self in FINAL_STATUSES

    @classmethod
    def of(cls, metrics: dict[str, Any] | None, default: "RunStatus") -> "RunStatus":
        """The status recorded in a metrics.json dict, or `default` when it has none (or an unknown one)."""
        try:
            return cls(str((metrics or {})["status"]))
        except (KeyError, ValueError):
            return default


FINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.PRUNED, RunStatus.DIVERGED, RunStatus.FAILED})


def run_dir_of(target: str | Path) -> Path:
    """The run folder of a run folder or of one of its checkpoint files."""
    path = Path(str(target)).expanduser()
    if path.suffix == ".pt" or path.is_file():
        path = path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent
    elif path.name == CHECKPOINTS_DIR and path.is_dir():
        path = path.parent
    return path


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def find_checkpoint(target: str | Path, names: tuple[str, ...] = (LAST_CHECKPOINT,)) -> Path:
    """A .pt file itself, or in a run folder (checkpoints/) or a checkpoints folder the first of `names` present.

    Resume continues last.pt; evaluation and prediction use the best-validation weights, best.pt (else last.pt).
    """
    target = Path(target).expanduser()
    if target.is_file():
        return target
    for name in names:
        for candidate in (target / CHECKPOINTS_DIR / name, target / name):
            if candidate.is_file():
                return candidate
    if not target.exists():
        raise UserError(f"{target} does not exist; pass a run folder (outputs/runs/...) or a checkpoint file")
    looked = " or ".join(f"{CHECKPOINTS_DIR}/{name}" for name in names)
    raise UserError(f"no checkpoint in {target} (looked for {looked}); the run saved none yet, start it again")


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json as written, or None when the run has none yet (or it cannot be read)."""
    try:
        metrics = json.loads((Path(run_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    atomic_json_dump(metrics, Path(run_dir) / METRICS_FILE)


def override_key(override: str) -> str:
    """The config key an override sets: `+model.width=8` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def saved_overrides(run_dir: Path) -> list[str]:
    """The overrides a run or trial was started with ([] when its snapshot is missing or damaged)."""
    saved = Path(run_dir) / SNAPSHOT_DIR / OVERRIDES_FILE
    try:
        previous = yaml.safe_load(saved.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []  # on resume, the checkpoint's config check still guards against a mismatch
    return [o for o in previous if isinstance(o, str)] if isinstance(previous, list) else []


def has_saved_overrides(run_dir: Path) -> bool:
    return (Path(run_dir) / SNAPSHOT_DIR / OVERRIDES_FILE).is_file()


def reusable_overrides(run_dir: Path) -> list[str]:
    """A run's saved overrides, to start from again; a run folder may come from someone else, so its
    settings are re-applied but never the code or the Hydra setup it names."""
    previous = saved_overrides(run_dir)
    for override in previous:
        key = override_key(override)
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or "_target_" in key:
            raise UserError(
                f"{run_dir}/{SNAPSHOT_DIR}/{OVERRIDES_FILE} sets {override!r}; a saved run may not choose code or "
                "Hydra's own settings: if you trust it, pass that override on the command line yourself"
            )
    return previous
