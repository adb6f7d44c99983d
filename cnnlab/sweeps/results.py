"""What a sweep folder holds, read back from its run folders: one row per trial, ranked, and the best command.

Only files every launcher writes are read (multirun.yaml, each job's .hydra/overrides.yaml and
metrics.json), so grid and Optuna sweeps, local and SLURM runs, are reported the same way.
"""

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cnnlab.errors import UserError
from cnnlab.folder_lock import is_locked
from cnnlab.run_folder import (
    SWEEP_LOCK,
    SWEEP_ONLY,
    RunStatus,
    has_saved_overrides,
    override_key,
    read_metrics,
    saved_overrides,
)
from cnnlab.sweeps.space import parse_search_space
from cnnlab.sweeps.trial import SWEEPER_TARGET

DEFAULT_OBJECTIVES = {"best_val_acc": "maximize"}


@dataclass
class TrialRow:
    number: int
    run_dir: Path
    status: RunStatus
    params: dict[str, str]  # swept key -> value as written in the trial's overrides
    overrides: list[str]  # every override the trial ran with
    metrics: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None


@dataclass
class SweepResults:
    sweep_dir: Path
    objectives: dict[str, str]
    searched: list[str]  # the swept keys, in command-line order
    sampler: str  # "grid" or the Optuna sampler's class name
    rows: list[TrialRow]  # ranked: completed by the first objective, then pruned, then the rest
    space: dict[str, Any] = field(default_factory=dict)  # Optuna distributions of an Optuna sweep's space
    report_metric: str = "val/acc"  # what trials reported to the pruner each epoch

    @property
    def best(self) -> TrialRow | None:
        return self.rows[0] if self.rows and self.rows[0].status == RunStatus.COMPLETED else None

    def pareto_front(self) -> list[TrialRow]:
        """Completed trials no other completed trial beats on every objective (multi-objective sweeps)."""
        done = [
            r
            for r in self.rows
            if r.status == RunStatus.COMPLETED and all(r.value(m) is not None for m in self.objectives)
        ]

        def signed(row: TrialRow) -> list[float]:
            return [row.value(m) * (1 if d == "maximize" else -1) for m, d in self.objectives.items()]

        def dominated(a: list[float], b: list[float]) -> bool:
            return all(y >= x for x, y in zip(a, b)) and any(y > x for x, y in zip(a, b))

        scores = {r.number: signed(r) for r in done}
        return [r for r in done if not any(dominated(scores[r.number], scores[o.number]) for o in done if o is not r)]


def best_command(row: TrialRow) -> str:
    return "cnnlab train " + " ".join(shlex.quote(o) for o in row.overrides)


def _swept_keys(task: list[str], params: dict[str, str]) -> list[str]:
    """Keys given as sweeps on the command line, plus the sweeper's params from the config."""
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(task) if o.is_sweep_override()]
    return keys + [k for k in params if k not in keys]


def _read_row(job_dir: Path, searched: list[str], sweep_running: bool) -> TrialRow | None:
    if not job_dir.name.isdigit() or not has_saved_overrides(job_dir):
        return None
    overrides = [o for o in saved_overrides(job_dir) if override_key(o) not in SWEEP_ONLY]
    pairs = {override_key(o): o.partition("=")[2] for o in overrides}
    metrics = read_metrics(job_dir) or {}
    status = RunStatus.of(metrics, RunStatus.RUNNING if sweep_running else RunStatus.FAILED)
    if status == RunStatus.RUNNING and not sweep_running:
        status = RunStatus.INTERRUPTED  # its sweep died with it; a resumed sweep retries it under a new number
    return TrialRow(
        number=int(job_dir.name),
        run_dir=job_dir,
        status=status,
        params={k: pairs[k] for k in searched if k in pairs},
        overrides=overrides,
        metrics=metrics,
    )


def _rank_key(row: TrialRow, metric: str, direction: str) -> tuple[int, float, int]:
    order = {RunStatus.COMPLETED: 0, RunStatus.PRUNED: 1}.get(row.status, 2)
    value = row.value(metric)
    score = (value if direction == "maximize" else -value) if value is not None else -math.inf
    return order, -score, row.number


def load_sweep(sweep_dir: Path) -> SweepResults:
    """Read a sweep folder; a UserError says what is missing when it is not one."""
    sweep_dir = Path(sweep_dir).expanduser()
    multirun_file = sweep_dir / "multirun.yaml"
    if not multirun_file.is_file():
        hint = "it does not exist" if not sweep_dir.exists() else "it has no multirun.yaml"
        raise UserError(f"{sweep_dir} is not a sweep folder ({hint}); sweeps are under outputs/sweeps/<date>/<time>")
    try:
        multirun = OmegaConf.load(multirun_file)
    except Exception as e:  # noqa: BLE001 - YAML and OmegaConf parse errors share no base class
        raise UserError(
            f"{multirun_file} is damaged ({str(e).splitlines()[0][:120]}); restore it or rerun the sweep"
        ) from e
    ours = OmegaConf.select(multirun, "hydra.sweeper._target_", default=None) == SWEEPER_TARGET
    objectives = (
        dict(zip(multirun.hydra.sweeper.objectives, multirun.hydra.sweeper.directions))
        if ours
        else dict(DEFAULT_OBJECTIVES)
    )
    sampler = str(OmegaConf.select(multirun, "hydra.sweeper.sampler._target_")).rsplit(".", 1)[-1] if ours else "grid"
    task = [str(o) for o in OmegaConf.select(multirun, "hydra.overrides.task", default=[]) or []]
    params = {
        str(k): str(v) for k, v in (OmegaConf.select(multirun, "hydra.sweeper.params", default=None) or {}).items()
    }
    searched = _swept_keys(task, params)
    space = parse_search_space(task, params).distributions if ours else {}
    running = is_locked(sweep_dir, SWEEP_LOCK)
    rows = [
        row for job in sweep_dir.iterdir() if job.is_dir() and (row := _read_row(job, searched, running)) is not None
    ]
    metric, direction = next(iter(objectives.items()))
    rows.sort(key=lambda r: _rank_key(r, metric, direction))
    report_metric = str(OmegaConf.select(multirun, "hydra.sweeper.report_metric", default="val/acc"))
    return SweepResults(sweep_dir, objectives, searched, sampler, rows, space, report_metric)


def best_trial_dir(target: str) -> Path:
    """`from_sweep=`: a sweep folder (its best trial) or one trial's folder inside it."""
    path = Path(target).expanduser()
    if path.name.isdigit() and has_saved_overrides(path):
        return path
    best = load_sweep(path).best
    if best is None:
        raise UserError(f"no trial in {path} completed, so it has no best configuration to re-run")
    return best.run_dir
