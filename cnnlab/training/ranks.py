"""The processes of one data-parallel run, and how they agree: rank 0 decides, every rank follows.

A run on one process uses `Ranks` itself, whose collectives return their input, so the training loop
reads the same whether one process trains or many. A data-parallel run joins torch.distributed's
process group (gloo on CPUs, NCCL on CUDA devices) through `ProcessRanks`; each collective that fails
because another process died or stopped answering becomes one `RankLost` error instead of a hang or a
backend traceback.
"""

import datetime
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from cnnlab.errors import UserError
from cnnlab.placement import Placement

T = TypeVar("T")


class RankLost(UserError):
    """Another process of a data-parallel run died or stopped answering, so this one stops too."""

    exit_code = 3  # a process's own exit code when it stopped for another's failure (not the run's cause)


class Ranks:
    """A single-process run: rank 0 of 1, and every collective is the identity."""

    rank = 0
    world_size = 1
    local_rank = 0
    group: dist.ProcessGroup | None = None  # the group training's collectives run over (None: the default)

    @property
    def leader(self) -> bool:
        """Rank 0: the process that decides, writes the run folder and logs."""
        return self.rank == 0

    def share(self, value: T) -> T:
        """Rank 0's `value`, on every rank (a picklable object)."""
        return value

    def lead(self, work: Callable[[], T]) -> T:
        """Rank 0 does `work` (reads a checkpoint, times the budget probe); every rank gets its result, or raises the
        UserError it raised."""
        outcome: Any = None
        if self.leader:
            try:
                outcome = work()
            except UserError as e:
                outcome = e
        outcome = self.share(outcome)
        if isinstance(outcome, UserError):
            raise outcome
        return outcome

    def first(self, work: Callable[[], T]) -> T:
        """Every rank does `work`, rank 0 before the others (it may download data or write a cache they then read);
        when it fails with a UserError, every rank raises that error instead."""
        if not self.leader:
            failure = self.share(None)
            if failure is not None:
                raise failure
            return work()
        try:
            result = work()
        except UserError as e:
            self.share(e)
            raise
        self.share(None)
        return result

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over the ranks (in place, and returned)."""
        return tensor

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        return [value]

    def barrier(self) -> None:
        """Wait until every rank gets here."""


def _reason(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def _collective(work: Callable[..., T]) -> Callable[..., T]:
    """A collective whose failure (a peer died, a timeout) is a RankLost error in one line."""

    @functools.wraps(work)
    def guarded(self: "ProcessRanks", *args: Any) -> T:
        try:
            return work(self, *args)
        except (RuntimeError, ConnectionError) as e:  # gloo and NCCL raise DistBackendError, a RuntimeError
            raise RankLost(
                f"rank {self.rank} lost contact with the other processes of this run ({_reason(e)}); "
                "one of them stopped or died, so this one stops too"
            ) from e

    return guarded


class ProcessRanks(Ranks):
    """A data-parallel run's process: collectives over the run's own groups, with the run's timeout.

    Tensors go over `group` (NCCL for CUDA tensors, gloo for CPU ones); objects over a gloo group of their own,
    so sharing a decision never waits on a GPU stream.
    """

    def __init__(self, placement: Placement, group: dist.ProcessGroup, control: dist.ProcessGroup) -> None:
        self.rank = placement.rank
        self.world_size = placement.world_size
        self.local_rank = placement.local_rank
        self.group = group
        self.control = control

    @_collective
    def share(self, value: T) -> T:
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    @_collective
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        group = self.control if tensor.device.type == "cpu" else self.group  # NCCL takes only GPU tensors
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return tensor

    @_collective
    def gather(self, value: T) -> list[T]:
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    @_collective
    def barrier(self) -> None:
        dist.barrier(group=self.control)


# How long the processes wait for each other to start and for rank 0 to compose the run's config
JOIN_TIMEOUT_S = 600.0


def connect(placement: Placement) -> None:
    """Join the processes torchrun (or torch's elastic launch) started, over gloo. This default group only carries
    the run's description from rank 0 to the others (`agree`); training uses the groups `run_groups` makes."""
    try:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S))
    except (RuntimeError, ValueError, ConnectionError) as e:
        address = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise UserError(
            f"rank {placement.rank} could not join the run's other processes at {address} ({_reason(e)}); check "
            "that every node reaches the rendezvous endpoint and that all were started with the same world size"
        ) from e


def agree(value: T | None, placement: Placement) -> T:
    """Rank 0's `value` (what to run), on every connected process."""
    box = [value]
    try:
        dist.broadcast_object_list(box, src=0)
    except (RuntimeError, ConnectionError) as e:
        raise RankLost(f"rank {placement.rank} never heard from rank 0 ({_reason(e)}); see rank 0's error") from e
    return box[0]


def run_groups(placement: Placement, device: torch.device, timeout_s: float) -> ProcessRanks:
    """The groups training's collectives run over: NCCL for a run on CUDA devices, gloo otherwise, and gloo for
    objects. `timeout_s` bounds every collective: a process that stops answering (hung, not dead) ends the run
    after that long instead of holding the others forever."""
    timeout = datetime.timedelta(seconds=timeout_s)
    group = dist.new_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout)
    return ProcessRanks(placement, group, control)


def leave() -> None:
    """Leave every group (also after an error, so NCCL and gloo shut down cleanly)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed rank `rank` draws its augmentation, data order and dropout from: the run's seed on rank 0, and a
    different stream per other rank, so the ranks' random crops and flips are not copies of each other."""
    return seed if rank == 0 else seed + 1_000_003 * rank
