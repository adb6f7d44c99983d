"""Data-parallel training on several processes, through torch's own launcher.

    cnnlab train trainer.devices=N                        N processes on this machine (torch's elastic launch)
    torchrun --nproc_per_node=N -m cnnlab train ...       the same, started by torchrun (also across machines)

Either way the process that composed the config (the `cnnlab` command, or torchrun's rank 0) holds the run
folder and describes the run in a `RankJob`; every rank then runs `run_rank`: it joins the others, builds its
shard of the data, and trains with DistributedDataParallel. Rank 0 alone writes checkpoints, metrics and logs.
"""

import copy
import logging
import logging.config
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf

from cnnlab.config.duration import parse_duration
from cnnlab.device import resolve_device
from cnnlab.errors import UserError, find_user_error
from cnnlab.placement import Placement, available_cores
from cnnlab.run_folder import RunStatus, read_metrics
from cnnlab.tracking.loggers import SweepInfo, current_sweep
from cnnlab.training.ranks import RankLost, agree, connect, leave, run_groups
from cnnlab.training.trainer import PruneRule, RunDiverged, RunInterrupted

log = logging.getLogger("cnnlab")
# Seconds the launcher gives its processes to save and leave after a Ctrl-C or SIGTERM before it kills them: a
# stop waits for the next log step and a checkpoint
SHUTDOWN_GRACE_S = 120
MONITOR_INTERVAL_S = 0.5  # how often the launcher looks for a process that ended (a dead one stops the others)


class TrialReporting(Protocol):
    """Where a search's trial reports its epochs (cnnlab.sweeps.trial.TrialReporting): its pruner's rule, built on
    rank 0."""

    def rule(self, pruner: DictConfig) -> PruneRule: ...


@dataclass
class RankJob:
    """Everything a process of a data-parallel run needs, from the process that composed the config: plain values
    (a rank may be a process without Hydra's runtime state)."""

    config: DictConfig  # resolved
    run_dir: str
    logging: dict[str, Any] | None  # Hydra's job logging settings, resolved (console and the run's train.log)
    sweep: SweepInfo | None  # the search the run is a trial of
    reporting: TrialReporting | None  # where the trial reports to its search's pruner
    threads: int | None  # CPU threads for all the processes on one machine (None: every core); each takes its share


@dataclass
class RankResult:
    """How a process's part of the run ended: the best validation accuracy, or the user error that ended it."""

    best_val_acc: float | None
    error: UserError | None = None


def rank_job(cfg: DictConfig, run_dir: Path, threads: int | None, reporting: TrialReporting | None) -> RankJob:
    """The job description, with what it needs of Hydra's runtime config (the logging, the search) when there is
    one, resolved here, where its resolvers (the time, the run id) are registered and remembered."""
    from hydra.core.hydra_config import HydraConfig

    logging_settings = None
    if HydraConfig.initialized():
        logging_settings = OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True)
    config = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return RankJob(config, str(run_dir), logging_settings, current_sweep(), reporting, threads)


def configure_rank_logging(job: RankJob, rank: int) -> None:
    """The composing process's logging (console and the run's train.log); ranks other than 0 log warnings and errors
    only, each line marked with its rank."""
    if job.logging is None:
        return
    settings = copy.deepcopy(job.logging)
    if rank > 0:
        settings["root"]["level"] = "WARNING"
        formatters = settings.setdefault("formatters", {})
        for formatter in formatters.values():
            formatter["format"] = f"[rank {rank}] {formatter.get('format', '%(message)s')}"
        formatters["rank"] = {"format": f"[rank {rank}] %(message)s"}
        for handler in settings.get("handlers", {}).values():
            handler.setdefault("formatter", "rank")
    logging.config.dictConfig(settings)


def run_rank(job: RankJob, placement: Placement) -> RankResult:
    """One process's part of the run, after `connect`: join the run's groups, train, and leave together.

    A UserError (an interrupt, a divergence, a lost peer) becomes the result, so the launcher sees every process
    end normally and the composing process prints it as one line; anything else is a crash and propagates.
    """
    from cnnlab.training.run import train

    cfg = job.config
    device = resolve_device(str(cfg.device), placement.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(max(1, (job.threads or available_cores()) // placement.local_world_size))
    ranks = run_groups(placement, device, parse_duration(cfg.trainer.dist_timeout, "trainer.dist_timeout"))
    try:
        prune = job.reporting.rule(cfg.pruner) if ranks.leader and job.reporting is not None else None
        result = RankResult(train(cfg, Path(job.run_dir), prune, ranks, job.sweep))
    except KeyboardInterrupt:
        result = RankResult(None, RunInterrupted("stopped at once; checkpoints/last.pt is the last finished epoch"))
    except Exception as e:
        error = find_user_error(e)
        if error is None:
            log.exception("rank %d failed", placement.rank)
            leave()
            raise
        # the run's own outcome is rank 0's to report (the launcher prints it); a rank's own trouble is its own
        reported = placement.rank > 0 and not isinstance(error, RunInterrupted | RunDiverged)
        log.error("%s", error, extra={"file_only": not reported})
        result = RankResult(None, error)
    if not isinstance(result.error, RankLost):
        try:
            ranks.barrier()  # leave together, so the launcher tears none of them down mid-write
        except RankLost:
            pass
    leave()
    return result


def rank_main(job: RankJob) -> RankResult:
    """The entry point of a process torch's elastic launch started (spawned: it starts from nothing)."""
    placement = Placement.from_environment()
    assert placement is not None, "started without torch.distributed's environment"
    configure_rank_logging(job, placement.rank)
    connect(placement)
    agree(job, placement)  # the same handshake as under torchrun, where only rank 0 has the job
    result = run_rank(job, placement)
    if isinstance(result.error, RunInterrupted | RankLost):
        # Interrupted: a launcher that is shutting down (it got the Ctrl-C too) never collects results, and the
        # process would wait for it until killed. A lost peer may be hung, not dead: a failed exit makes the
        # launcher stop it. Either way leave now; metrics.json and the log say how the run stopped.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(getattr(result.error, "exit_code", 1))
    return result


def outcome(result: RankResult | None) -> float:
    """The run's best validation accuracy, or the error that ended it raised."""
    if result is None or result.error is not None:
        raise result.error if result is not None else UserError("the run ended without a result")
    return result.best_val_acc or 0.0


def launch_ranks(
    cfg: DictConfig,
    run_dir: Path,
    processes: int,
    threads: int | None,
    reporting: TrialReporting | None = None,
) -> float:
    """`trainer.devices=N`: start N processes on this machine through torch's elastic launch and wait for them.

    On CUDA each gets its own GPU; on the CPU each gets cores / N threads. A process that dies ends the others (the
    launcher stops them) and the run reports which one; the run folder keeps its last checkpoint to resume from.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    device = resolve_device(str(cfg.device))
    if device.type == "cuda" and processes > torch.cuda.device_count():
        raise UserError(
            f"trainer.devices={processes} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"use trainer.devices={torch.cuda.device_count()} or fewer"
        )
    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=MONITOR_INTERVAL_S,
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    log.info("training on %d processes (%s); rank 0 reports", processes, device.type)
    quiet_launcher()
    try:
        results = elastic_launch(launch, rank_main)(rank_job(cfg, run_dir, threads, reporting))
    except ChildFailedError as e:
        if RunStatus.of(read_metrics(run_dir), RunStatus.RUNNING) == RunStatus.INTERRUPTED:
            raise RunInterrupted(_interrupted_message(run_dir)) from None  # a rank got SIGTERM: all saved and left
        raise UserError(_failure_message(e, run_dir)) from None
    except SignalException:  # Ctrl-C or SIGTERM: the processes were told to save and stop
        raise RunInterrupted(_interrupted_message(run_dir)) from None
    return outcome(results.get(0))


def quiet_launcher() -> None:
    """Silence torch's launcher: its notes and tracebacks on starting and stopping processes say what the run says in
    one line (it sets each of its loggers' level as it imports them, so they are set here, after the import)."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def lead_torchrun(
    cfg: DictConfig,
    run_dir: Path,
    placement: Placement,
    threads: int | None,
    reporting: TrialReporting | None = None,
) -> float:
    """torchrun's rank 0, inside the composed run: hand the job to the other ranks, then train as one of them."""
    connect(placement)
    job = agree(rank_job(cfg, run_dir, threads, reporting), placement)
    return outcome(run_rank(job, placement))


def follow_torchrun(placement: Placement) -> int:
    """torchrun's other ranks, from the command line before anything is composed: take rank 0's job and train.

    Returns the exit code; a lost peer or a crash of this rank's own is printed in one line (rank 0 reports the
    run's outcome).
    """
    connect(placement)
    job = agree(None, placement)
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)  # on another machine, for this rank's train.log
    configure_rank_logging(job, placement.rank)
    result = run_rank(job, placement)
    if isinstance(result.error, RankLost):
        print(f"cnnlab: error: {result.error}", file=sys.stderr)
    return getattr(result.error, "exit_code", 2) if result.error is not None else 0


def _interrupted_message(run_dir: Path) -> str:
    metrics = read_metrics(run_dir) or {}
    return metrics.get("message") or f"interrupted; continue with: cnnlab train resume={run_dir}"


def _failure_message(error: Any, run_dir: Path) -> str:
    """One line for the process whose failure ended the run: which rank, how, and where to resume from.

    The cause is a crash (its exception recorded), a signal or an exit code, in that order of preference, before
    the processes that only stopped because they lost it (RankLost's exit code).
    """

    def cause_first(item: tuple[int, Any]) -> tuple[bool, bool, float]:
        failure = item[1]
        return failure.exitcode == RankLost.exit_code, not isinstance(failure.message, dict), failure.timestamp

    rank, failure = min(error.failures.items(), key=cause_first)
    if isinstance(failure.message, dict):  # the exception a crashed process recorded
        how = f"failed ({str(failure.message.get('message', '')).splitlines()[0][:200]})"
    elif failure.signal_name() != "<N/A>":
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"exited with code {failure.exitcode}"
    recorded = read_metrics(run_dir) or {}
    status = RunStatus.of(recorded, RunStatus.RUNNING)
    why = f": {recorded['message']}" if recorded.get("message") else ""
    return (
        f"training process rank {rank} {how}, so the run's other processes were stopped (status {status}{why}); "
        f"its log: {run_dir}/train.log; continue from the last checkpoint with: cnnlab train resume={run_dir}"
    )
