"""Launching trials one at a time, so a sweep can start the next trial as soon as any one ends.

Hydra's launchers take a batch and return when all of it has ended. cnnlab's own launchers
(launcher=parallel, launcher=slurm) are `TrialLauncher`s: the search sweeper submits trials one by one
and hears of each as it ends, and a grid sweep's batch goes through the same queue. Other Hydra
launchers (basic, joblib, submitit_local) are driven in batches through `BatchLaunch`.

A trial runs in another process as a `TrialJob`: the sweep's config and Hydra's state, pickled, and
there composed and run as Hydra's own launchers do (joblib's worker, submitit's job).
"""

import importlib
import time
from abc import ABC
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from cnnlab.errors import UserError
from cnnlab.sweeps.optuna_internals import set_hydra_state

Finished = list[tuple[int, JobReturn]]  # (trial number, how its job ended)
POLL_S = 0.5  # how often a launcher looks for trials that ended


@dataclass(frozen=True)
class TaskRef:
    """A task function by module and name: @hydra.main puts a wrapper under its name, so pickle cannot find it."""

    module: str
    name: str

    @classmethod
    def of(cls, function: TaskFunction) -> "TaskRef":
        ref = cls(function.__module__, function.__qualname__)
        if ref.resolve() is not function:
            raise TypeError(f"{ref.module}.{ref.name} cannot be found by name, so no other process can run it")
        return ref

    def resolve(self) -> TaskFunction:
        found = getattr(importlib.import_module(self.module), self.name)
        return getattr(found, "__wrapped__", found)


@dataclass
class TrialJob:
    """One trial, ready to run in another process: compose its config there and run it as a Hydra job."""

    hydra_context: HydraContext
    config: DictConfig  # the sweep's config
    task: TaskRef
    hydra_state: dict[Any, Any]  # optuna_internals.hydra_state() of the sweep's process
    overrides: list[str]
    num: int
    threads: int | None = None  # CPU threads for the trial (hydra.launcher.cpus_per_task), None: the config's
    job_id: str | None = None  # hydra.job.id: the SLURM job's, else <job name>_<num>

    def __call__(self) -> JobReturn:
        setup_globals()  # Hydra's resolvers; importing the task registers cnnlab's
        task_function = self.task.resolve()
        set_hydra_state(self.hydra_state)
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(self.overrides))
        with open_dict(config):
            config.hydra.job.id = self.job_id or f"{config.hydra.job.name}_{self.num}"
            config.hydra.job.num = self.num
            if self.threads is not None:
                config.hydra.launcher.cpus_per_task = self.threads
        HydraConfig.instance().set_config(config)
        return run_job(
            hydra_context=self.hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )


def whole_setting(value: Any, key: str, minimum: int) -> int:
    """A sweeper or launcher setting that counts something, checked: a mistake is one line before any trial starts.
    `key` is the full key (hydra.launcher.n_jobs)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key}={value!r} is invalid: must be a whole number >= {minimum}")
    return value


def failed_return(overrides: Sequence[str], error: BaseException) -> JobReturn:
    """The result of a job that ended without one of its own (its process died, or it could not start)."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def job_run_dir(ret: JobReturn | None, sweep_dir: Path, num: int) -> Path:
    """The trial's run folder: where its job says it ran, else the sweep's folder for that number."""
    if ret is not None and ret.hydra_cfg is not None:
        return Path(ret.hydra_cfg.hydra.runtime.output_dir)
    return sweep_dir / str(num)


class Running(Protocol):
    """A started trial."""

    def poll(self) -> JobReturn | None:
        """Its result once it has ended for good, else None."""

    def interrupt(self) -> None:
        """Ask it to stop after its current step (it saves its checkpoint)."""


Start = Callable[[int, Sequence[str], str | None], Running]  # (trial number, overrides, slot's GPUs) -> trial


class SlotPool:
    """Queued trials started in free slots as running ones end; a slot may hold GPUs for its trial."""

    def __init__(self, slots: Sequence[str | None], start: Start, sleep: Callable[[float], None] = time.sleep) -> None:
        self.slots = list(slots)
        self.start = start
        self.sleep = sleep
        self.queued: list[tuple[int, list[str]]] = []
        self.running: dict[int, tuple[int, Running]] = {}  # trial number -> (slot index, trial)

    def submit(self, num: int, overrides: Sequence[str]) -> None:
        self.queued.append((num, list(overrides)))

    def wait_any(self) -> Finished:
        """Block until at least one trial has ended; return every one that has ([] when none is left)."""
        while True:
            self._fill()
            ended = [(num, ret) for num, (_, trial) in self.running.items() if (ret := trial.poll()) is not None]
            for num, _ in ended:
                del self.running[num]
            if ended or not self.running:
                return ended
            self.sleep(POLL_S)

    def stop(self) -> None:
        """Drop the queued trials, interrupt the running ones once and wait for them; another Ctrl-C while
        waiting is passed on (a trial then stops at once)."""
        self.queued.clear()
        for _, trial in self.running.values():
            trial.interrupt()
        while self.running:
            try:
                self.wait_any()
            except KeyboardInterrupt:
                for _, trial in self.running.values():
                    trial.interrupt()

    def _fill(self) -> None:
        used = {slot for slot, _ in self.running.values()}
        free = [index for index in range(len(self.slots)) if index not in used]
        while self.queued and free:
            num, overrides = self.queued.pop(0)
            slot = free.pop(0)
            self.running[num] = (slot, self.start(num, overrides, self.slots[slot]))


class TrialLauncher(Launcher, ABC):
    """A launcher that takes trials one at a time into its SlotPool (set up by `setup`) and reports each as it
    ends, so a search keeps every slot busy; a grid sweep's batch goes through the same queue."""

    pool: SlotPool

    @property
    def capacity(self) -> int:
        return len(self.pool.slots)

    def submit(self, num: int, overrides: Sequence[str]) -> None:
        self.pool.submit(num, overrides)

    def wait_any(self) -> Finished:
        return self.pool.wait_any()

    def stop(self) -> None:
        """The sweep is stopping: its running trials stop too (they save their checkpoints)."""
        self.pool.stop()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for num, overrides in zip(numbers, job_overrides):
            self.submit(num, overrides)
        ended: dict[int, JobReturn] = {}
        try:
            while len(ended) < len(numbers):
                ended.update(self.wait_any())
        except BaseException:
            self.stop()
            raise
        return [ended[num] for num in numbers]


def _consecutive(queued: Sequence[tuple[int, list[str]]]) -> Iterator[list[tuple[int, list[str]]]]:
    """Runs of trials with consecutive numbers: a Hydra launch numbers its jobs from one starting index."""
    run: list[tuple[int, list[str]]] = []
    for item in queued:
        if run and item[0] != run[-1][0] + 1:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


class BatchLaunch:
    """Any Hydra launcher driven like a TrialLauncher: the trials submitted since the last wait run as one batch."""

    def __init__(self, launcher: Launcher, n_jobs: int) -> None:
        self.launcher = launcher
        self.capacity = n_jobs
        self.queued: list[tuple[int, list[str]]] = []

    def submit(self, num: int, overrides: Sequence[str]) -> None:
        self.queued.append((num, list(overrides)))

    def wait_any(self) -> Finished:
        queued, self.queued = self.queued, []
        finished: Finished = []
        for run in _consecutive(queued):
            results = self.launcher.launch([overrides for _, overrides in run], initial_job_idx=run[0][0])
            finished.extend(zip((num for num, _ in run), results))
        return finished

    def stop(self) -> None:
        """Nothing runs between waits: a batch ends inside wait_any."""


def trial_launcher(launcher: Launcher, n_jobs: int) -> TrialLauncher | BatchLaunch:
    return launcher if isinstance(launcher, TrialLauncher) else BatchLaunch(launcher, n_jobs)
