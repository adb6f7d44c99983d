"""The Optuna study behind a sweep: where it is stored, what it optimizes, and what each trial's run reported.

The study lives in storage the sweep and every trial open on their own (a journal file in the sweep
folder by default), so trials can report epochs and be pruned from any launcher's processes, and a
sweep started again on the same folder continues where it stopped.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from cnnlab.errors import UserError
from cnnlab.run_folder import RUN_METRICS, RunStatus
from cnnlab.sweeps.optuna_internals import live_trial

JOURNAL_FILE = "study.journal"
DIRECTIONS = ("maximize", "minimize")


STORAGE_HELP = (
    "use null (a journal file in the sweep folder), a path ending in .journal, or a database URL such as "
    "sqlite:///study.db in a folder that exists (PostgreSQL and MySQL URLs need their Python driver installed)"
)
IN_MEMORY_URLS = ("sqlite://", "sqlite:///:memory:")


def storage_for(url: str | None, sweep_dir: Path) -> BaseStorage:
    """None: a journal file in the sweep folder; a path ending in .journal: that file; else a database URL.

    The database is opened here, so a malformed URL, a missing driver or an unreachable server is one
    line before any trial starts.
    """
    if url in (None, ""):
        return JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL_FILE)))
    text = str(url)
    if "://" not in text:
        if not text.endswith(".journal"):
            raise UserError(f"hydra.sweeper.storage={text!r} is not a storage: {STORAGE_HELP}")
        path = Path(text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if text in IN_MEMORY_URLS:
        raise UserError(
            f"hydra.sweeper.storage={text!r} is an in-memory database, which the trials' processes cannot share: "
            f"{STORAGE_HELP}"
        )
    try:
        return RDBStorage(text)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's URL, driver and connection errors have no common base
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"hydra.sweeper.storage={text!r} cannot be opened ({reason}); {STORAGE_HELP}") from e


def check_objectives(metrics: Sequence[str], directions: Sequence[str]) -> dict[str, str]:
    """{metrics.json key: maximize|minimize}, in order: the first one ranks the trials."""
    metrics = [metrics] if isinstance(metrics, str) else metrics  # objectives=best_val_acc means [best_val_acc]
    directions = [directions] if isinstance(directions, str) else directions
    metrics, directions = [str(m) for m in metrics or []], [str(d) for d in directions or []]
    if not metrics:
        raise UserError("hydra.sweeper.objectives is empty: give at least one, for example [best_val_acc]")
    unknown = [m for m in metrics if m not in RUN_METRICS]
    if unknown:
        raise UserError(
            f"hydra.sweeper.objectives: {unknown[0]!r} is not a number runs record in metrics.json; "
            f"choose from {', '.join(RUN_METRICS)}"
        )
    if len(directions) != len(metrics) or len(set(metrics)) != len(metrics):
        raise UserError(
            f"hydra.sweeper.objectives={metrics} needs one hydra.sweeper.directions entry per objective, "
            f"each objective once (got directions={directions}); "
            "for example 'hydra.sweeper.directions=[maximize,minimize]'"
        )
    for metric, direction in zip(metrics, directions):
        if direction not in DIRECTIONS:
            raise UserError(
                f"hydra.sweeper.directions: {direction!r} (for {metric}) is invalid: use maximize or minimize"
            )
    return dict(zip(metrics, directions))


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Trials that ran to an end; those cut off by a dead sweep are retried and do not count."""
    return trial.state.is_finished() and not trial.user_attrs.get("interrupted", False)


def requeue(study: optuna.Study, frozen: FrozenTrial) -> None:
    """A trial cut off by a dead or stopped sweep: mark it interrupted and queue its parameters again."""
    trial = live_trial(study, frozen.number)
    trial.set_user_attr("interrupted", True)
    trial.set_user_attr("status", RunStatus.INTERRUPTED.value)
    study.tell(frozen.number, state=TrialState.FAIL)
    study.enqueue_trial(frozen.params, user_attrs={"retry_of": frozen.number})


def objective_values(metrics: Mapping[str, Any], objectives: Mapping[str, str]) -> list[float] | str:
    """The objective values a finished run reported, or the reason they are unusable."""
    values = []
    for metric in objectives:
        value = metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"metrics.json has no usable {metric!r} (got {value!r})"
        values.append(float(value))
    return values
