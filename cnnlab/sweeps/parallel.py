"""launcher=parallel: trials in fresh local processes, each GPU shared by at most `trials_per_gpu` of them
(a data-parallel trial takes `gpus_per_trial` GPUs).

A fresh process per trial (not a pool of reused workers), so the CUDA_VISIBLE_DEVICES it starts with is
the GPU it uses, and a trial's memory is returned when it ends. A queued trial starts as soon as any
running one ends, in the slot (the share of a GPU) that one left.
"""

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cnnlab.errors import UserError
from cnnlab.placement import available_cores
from cnnlab.sweeps.launch import SlotPool, TaskRef, TrialJob, TrialLauncher, failed_return, whole_setting
from cnnlab.sweeps.optuna_internals import hydra_state

log = logging.getLogger("cnnlab")


def visible_gpus() -> list[str]:
    """The GPUs trials may use, as CUDA_VISIBLE_DEVICES names them: this process's own list when it has one."""
    import torch

    count = torch.cuda.device_count()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in given.split(",")] if given else [str(i) for i in range(count)]
    return names[:count]


def plan_slots(
    n_jobs: int, gpus: Sequence[str], trials_per_gpu: int, cores: int, gpus_per_trial: int = 1
) -> list[str | None]:
    """One entry per trial that may run at once: the GPUs it gets (CUDA_VISIBLE_DEVICES), round-robin, or None on
    a machine without GPUs. n_jobs=-1: every GPU share, or one trial per core without GPUs.
    """
    if not gpus:
        return [None] * (cores if n_jobs < 0 else n_jobs)
    if gpus_per_trial > len(gpus):
        raise UserError(
            f"hydra.launcher.gpus_per_trial={gpus_per_trial} (each trial's trainer.devices) but this machine shows "
            f"{len(gpus)} GPUs"
        )
    groups = [",".join(gpus[i : i + gpus_per_trial]) for i in range(0, len(gpus) - gpus_per_trial + 1, gpus_per_trial)]
    shares = [group for _ in range(trials_per_gpu) for group in groups]
    return shares if n_jobs < 0 else shares[:n_jobs]


def child_env(gpus: str | None) -> dict[str, str]:
    """A trial's environment: this one, with only its GPUs visible (None: no GPU to hand out)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else dict(os.environ)


class LocalTrial:
    """A trial in its own process (`python -m cnnlab.sweeps.worker`), in a session of its own: a Ctrl-C in the
    terminal reaches the sweep alone, which passes it on exactly once."""

    def __init__(self, job: TrialJob, gpus: str | None, folder: Path) -> None:
        self.overrides = job.overrides
        self.job_file, self.result_file = folder / f"{job.num}.job", folder / f"{job.num}.result"
        self.job_file.write_bytes(pickle.dumps(job))
        self.result_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "cnnlab.sweeps.worker", str(self.job_file), str(self.result_file)]
        self.process = subprocess.Popen(command, env=child_env(gpus), start_new_session=True)

    def poll(self) -> JobReturn | None:
        code = self.process.poll()
        if code is None:
            return None
        try:
            ret = pickle.loads(self.result_file.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            error = RuntimeError(f"the trial's process ended without a result (exit code {code})")
            ret = failed_return(self.overrides, error)
        self.job_file.unlink(missing_ok=True)
        self.result_file.unlink(missing_ok=True)
        return ret

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


class ParallelLauncher(TrialLauncher):
    """The arguments are conf/launcher/parallel.yaml's hydra.launcher keys."""

    def __init__(
        self, n_jobs: int, trials_per_gpu: int = 1, gpus_per_trial: int = 1, cpus_per_task: int | None = None
    ) -> None:
        self.n_jobs = n_jobs if n_jobs == -1 else whole_setting(n_jobs, "hydra.launcher.n_jobs", 1)
        self.trials_per_gpu = whole_setting(trials_per_gpu, "hydra.launcher.trials_per_gpu", 1)
        self.gpus_per_trial = whole_setting(gpus_per_trial, "hydra.launcher.gpus_per_trial", 1)
        self.cpus_per_task = (
            None if cpus_per_task is None else whole_setting(cpus_per_task, "hydra.launcher.cpus_per_task", 1)
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config, self.task = hydra_context, config, TaskRef.of(task_function)
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        gpus = visible_gpus()
        slots = plan_slots(self.n_jobs, gpus, self.trials_per_gpu, available_cores(), self.gpus_per_trial)
        self.threads = self.cpus_per_task or max(1, available_cores() // len(slots))
        self.folder = tempfile.TemporaryDirectory(prefix="cnnlab-trials-")  # job and result files; removed with it
        self.pool = SlotPool(slots, self._start)
        where = f"{len(gpus)} GPUs, {self.gpus_per_trial} per trial, x {self.trials_per_gpu}" if gpus else "no GPU"
        log.info("launcher=parallel: %d trials at once (%s), %d CPU threads each", len(slots), where, self.threads)

    def _start(self, num: int, overrides: Sequence[str], gpus: str | None) -> LocalTrial:
        log.info("#%d : %s%s", num, " ".join(filter_overrides(overrides)), f" (GPU {gpus})" if gpus else "")
        job = TrialJob(self.hydra_context, self.config, self.task, hydra_state(), list(overrides), num, self.threads)
        return LocalTrial(job, gpus, Path(self.folder.name))
