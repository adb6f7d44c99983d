"""launcher=slurm: each trial a SLURM job (through submitit), submitted as soon as the sweep wants it.

A trial SLURM stops from outside - preemption or scancel (SIGTERM), or its time limit (submitit's warning
signal, SIGUSR2, which the job turns into the SIGTERM cnnlab's trainer handles) - saves checkpoints/last.pt
and is submitted again in its own folder with resume=, up to hydra.launcher.max_num_timeout times; the study
sees one trial. SLURM's own requeue is off (sbatch --no-requeue): it would start the trial from its first epoch.

Jobs are followed through their result files and squeue, never sacct, which fails where accounting is off.
"""

import getpass
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.utils import JobReturn, configure_log, filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import UserError
from cnnlab.run_folder import LAST_CHECKPOINT, RunStatus, checkpoints_dir, read_metrics
from cnnlab.sweeps.launch import (
    SlotPool,
    TaskRef,
    TrialJob,
    TrialLauncher,
    failed_return,
    job_run_dir,
    whole_setting,
)
from cnnlab.sweeps.optuna_internals import hydra_state

log = logging.getLogger("cnnlab")
QUEUE_POLL_S = 15.0  # how often squeue is asked which jobs are still queued or running
ABSENT_POLLS = 2  # a job missing from this many squeue listings in a row, without a result file, has died


def _stop_gracefully(signum: int, frame: FrameType | None) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class SlurmTrial:
    """The callable a SLURM job runs: the trial, with the time limit's warning turned into a graceful stop."""

    job: TrialJob

    def __call__(self) -> JobReturn:
        signal.signal(signal.SIGUSR2, _stop_gracefully)  # instead of submitit's requeue with the same overrides
        return replace(self.job, job_id=os.environ.get("SLURM_JOB_ID"))()


class SlurmQueue:
    """Which jobs SLURM still holds (squeue, at most every QUEUE_POLL_S): one gone without a result has died."""

    def __init__(self) -> None:
        self.asked_at = -float("inf")
        self.absent: dict[str, int] = {}  # watched job -> squeue listings in a row that did not show it

    def watch(self, job_id: str) -> None:
        self.absent[job_id] = 0

    def forget(self, job_id: str) -> None:
        self.absent.pop(job_id, None)

    def gone(self, job_id: str) -> bool:
        if time.monotonic() - self.asked_at >= QUEUE_POLL_S:
            self.asked_at = time.monotonic()
            listing = subprocess.run(
                ["squeue", "--noheader", "--user", getpass.getuser(), "--format", "%i"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if listing.returncode == 0:  # else ask again next time: the controller may be busy
                queued = set(listing.stdout.split())
                self.absent = {j: 0 if j in queued else n + 1 for j, n in self.absent.items()}
        return self.absent.get(job_id, 0) >= ABSENT_POLLS


def accounting_note() -> str | None:
    """One line saying that sacct fails here (SLURM accounting is often off on small clusters); None when it works."""
    try:
        probe = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        reason = str(e)
    else:
        if probe.returncode == 0:
            return None
        said = (probe.stderr.strip() or probe.stdout.strip() or f"exit code {probe.returncode}").splitlines()[0]
        reason = said.removeprefix("sacct: ")
    return f"sacct does not work here ({reason}): cnnlab follows its SLURM jobs with squeue and their result files"


class SlurmRun:
    """One trial's SLURM job, submitted again (resuming) while SLURM stops it and retries are left."""

    def __init__(self, launcher: "SlurmLauncher", num: int, overrides: list[str]) -> None:
        self.launcher, self.num, self.overrides = launcher, num, overrides
        self.retries = 0
        self.cancelled = False
        self.job = launcher.submit_job(num, overrides)

    def poll(self) -> JobReturn | None:
        queue = self.launcher.queue
        has_result = self.job.paths.result_pickle.exists()
        if not (has_result or self.cancelled or queue.gone(self.job.job_id)):
            return None
        queue.forget(self.job.job_id)
        ret = self._result(has_result)
        return None if not self.cancelled and self._resubmitted(ret, has_result) else ret

    def interrupt(self) -> None:
        """scancel: its SIGTERM makes the trial save its checkpoint before it ends."""
        self.cancelled = True
        self.job.cancel(check=False)

    def _result(self, has_result: bool) -> JobReturn:
        if not has_result:
            return failed_return(
                self.overrides,
                RuntimeError(
                    f"SLURM job {self.job.job_id} ended without a result (time limit, memory, a failed node or "
                    f"scancel); its log: {self.job.paths.stderr}"
                ),
            )
        try:
            return self.job.results()[0]
        except Exception as e:  # noqa: BLE001 - submitit's FailedJobError carries the job's traceback
            return failed_return(self.overrides, e)

    def _resubmitted(self, ret: JobReturn, has_result: bool) -> bool:
        """Submit the trial again when SLURM stopped it, resuming from its checkpoint; False when it ended for good."""
        run_dir = job_run_dir(ret, self.launcher.sweep_dir, self.num)
        status = RunStatus.of(read_metrics(run_dir), RunStatus.RUNNING)
        stopped = status == RunStatus.INTERRUPTED or (not has_result and status == RunStatus.RUNNING)
        if not stopped or self.retries >= self.launcher.max_retries:
            return False
        from cnnlab.sweeps.space import format_value  # imports optuna: only when a trial is submitted again

        resume = (checkpoints_dir(run_dir) / LAST_CHECKPOINT).is_file()
        self.retries += 1
        log.warning(
            "trial %d: SLURM stopped job %s (preemption, time limit or scancel); submitting it again %s (%d of %d)",
            self.num,
            self.job.job_id,
            "to resume from its checkpoint" if resume else "from the start (it saved no checkpoint)",
            self.retries,
            self.launcher.max_retries,
        )
        extra = [f"resume={format_value(str(run_dir))}"] if resume else []
        self.job = self.launcher.submit_job(self.num, [*self.overrides, *extra])
        return True


class SlurmLauncher(TrialLauncher):
    """The arguments are hydra.launcher's keys: Hydra's submitit_slurm settings (conf/launcher/slurm.yaml)."""

    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items()}
        self.max_retries = whole_setting(self.params["max_num_timeout"], "hydra.launcher.max_num_timeout", 0)
        # trials in SLURM at once
        self.in_slurm = whole_setting(self.params["array_parallelism"], "hydra.launcher.array_parallelism", 1)
        if self.params["tasks_per_node"] != 1:
            raise UserError(
                f"hydra.launcher.tasks_per_node={self.params['tasks_per_node']} would run each trial that many times: "
                "keep 1 (a data-parallel trial starts its own processes on the GPUs of gpus_per_node)"
            )
        self.queue = SlurmQueue()
        self.executor: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if shutil.which("sbatch") is None:
            raise UserError("launcher=slurm needs SLURM's sbatch and squeue here: run the sweep on a login node")
        self.hydra_context, self.config, self.task = hydra_context, config, TaskRef.of(task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        self.pool = SlotPool([None] * self.in_slurm, lambda num, overrides, _: SlurmRun(self, num, list(overrides)))

    def submit_job(self, num: int, overrides: list[str]) -> Any:
        job = TrialJob(self.hydra_context, self.config, self.task, hydra_state(), overrides, num)
        from submitit.core.utils import FailedJobError

        try:
            submitted = self._executor().submit(SlurmTrial(job))
        except FailedJobError as e:  # sbatch's own words: a partition, a resource request, an unreachable controller
            said = str(e).strip().splitlines()[-1] if str(e).strip() else "no reason given"
            raise UserError(
                f"sbatch refused trial {num}'s job ({said}); check the hydra.launcher settings (partition, "
                "resources) and that this machine reaches the SLURM controller"
            ) from e
        self.queue.watch(submitted.job_id)
        log.info("#%d : %s (SLURM job %s)", num, " ".join(filter_overrides(overrides)), submitted.job_id)
        return submitted

    def _executor(self) -> Any:
        """submitit's executor with Hydra's submitit_slurm settings, as Hydra's own SLURM launcher builds it."""
        if self.executor is None:
            import submitit

            from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

            shared = set(OmegaConf.structured(BaseQueueConf).keys())
            skipped = ("submitit_folder", "max_num_timeout")  # the retries are cnnlab's, not submitit's requeues
            params = {k if k in shared else f"slurm_{k}": v for k, v in self.params.items() if k not in skipped}
            extra = params.get("slurm_additional_parameters") or {}
            params["slurm_additional_parameters"] = {**extra, "no-requeue": True}
            self.executor = submitit.AutoExecutor(
                cluster="slurm", folder=self.params["submitit_folder"], slurm_max_num_timeout=0
            )
            self.executor.update_parameters(**params)
            if note := accounting_note():
                log.info(note)
        return self.executor
