"""The `logger` config group: the sinks a user chose (TensorBoard, CSV, W&B, MLflow), built from the config.

Each chosen logger is a `_partial_` target called with the run's `RunContext`. A logger that fails while the run
goes on (a service down, a full disk) is dropped with one warning: training and the other sinks carry on. A logger
that cannot start because its package is missing is a user error at once, before any training.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from cnnlab.errors import UserError, install_extra
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import Sink

log = logging.getLogger("cnnlab")


@dataclass(frozen=True)
class SweepInfo:
    """The search a run belongs to: its folder, and this run's trial (job) number in it."""

    folder: Path
    trial: int

    @property
    def name(self) -> str:
        """A name for the whole search, the same in every trial: its folder's last two parts (date/time_id)."""
        return "/".join(self.folder.resolve().parts[-2:])


@dataclass(frozen=True)
class RunContext:
    """What a logger may need to know about the run it records."""

    run_dir: Path
    config: dict[str, Any]  # the resolved config
    hparams: dict[str, Any]  # the headline settings (scalars and strings)
    history: list[dict[str, Any]] = field(default_factory=list)  # epochs done before a resume
    resumed: bool = False
    purge_step: int | None = None  # a resumed run's first epoch: later steps a killed process logged are dropped
    sweep: SweepInfo | None = None

    @property
    def name(self) -> str:
        """The run's display name: its folder's name (a sweep trial: the search's name and the trial number)."""
        if self.sweep is not None:
            return f"{self.sweep.name}/{self.sweep.trial}"
        return self.run_dir.resolve().name


def current_sweep() -> SweepInfo | None:
    """The search this process runs a trial of, from Hydra's runtime config; None for a single run (or no Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return SweepInfo(Path(hydra.sweep.dir), int(hydra.job.num))


def build_loggers(chosen: Mapping[str, Any] | None, context: RunContext) -> list[Sink]:
    """One guarded sink per chosen logger, in the order chosen."""
    sinks: list[Sink] = []
    for name, node in (chosen or {}).items():
        if node is None:
            continue
        factory: Callable[[RunContext], Sink] = instantiate(node)
        try:
            sink = factory(context)
        except Exception as e:
            if user_error := _user_error_in(e):  # a missing package: stop, closing the loggers already started
                for started in sinks:
                    started.close()
                raise user_error from e
            log.warning("logger %s could not start (%s); the run goes on without it", name, _first_line(e))
            continue
        sinks.append(GuardedSink(name, sink))
    return sinks


def _user_error_in(error: BaseException | None) -> UserError | None:
    """A UserError raised as such somewhere in the chain (not a file or disk problem: those only drop the logger)."""
    while error is not None:
        if isinstance(error, UserError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


class GuardedSink(Sink):
    """Passes events to `sink` until one fails; then warns once and ignores it for the rest of the run."""

    def __init__(self, name: str, sink: Sink) -> None:
        self.name = name
        self.sink: Sink | None = sink

    def _call(self, hook: str, *args: Any) -> None:
        if self.sink is None:
            return
        try:
            getattr(self.sink, hook)(*args)
        except Exception as e:  # noqa: BLE001 - a logger must not stop training; the warning says what happened
            log.warning("logger %s failed (%s); the run goes on without it", self.name, _first_line(e))
            sink, self.sink = self.sink, None
            if hook != "close":
                try:
                    sink.close()
                except Exception:  # noqa: BLE001, S110 - already reported; closing is a courtesy
                    pass

    def run_started(self, info: dict[str, Any]) -> None:
        self._call("run_started", info)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self._call("epoch_started", epoch, epochs, steps)

    def step(self, step: int, stats: dict[str, float]) -> None:
        self._call("step", step, stats)

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self._call("epoch_ended", epoch, metrics)

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        self._call("tensors", epoch, weights, grad_norms)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        self._call("images", tag, images, step)

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        self._call("evaluation", split, report, classes, step, confusion)

    def graph(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        self._call("graph", model, example)

    def run_ended(self, summary: dict[str, Any]) -> None:
        self._call("run_ended", summary)

    def close(self) -> None:
        self._call("close")


def resumed_record(context: RunContext, filename: str) -> str | None:
    """What a logger recorded in the run folder about its service's run (its id), when this run resumes; None for a
    new run, which starts a new service run even where an earlier run in the same folder left a record."""
    path = context.run_dir / filename
    return path.read_text().strip() if context.resumed and path.is_file() else None


def require_extra(module: str, extra: str, logger: str) -> Any:
    """Import an optional logger's package, or stop with a one-line error naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"logger={logger} needs {module}, not installed here: {install_extra(extra)}") from e
