"""Where a process runs: its place in a data-parallel run (from the environment torchrun gives its processes)
and the cores it may use.

Free of torch, so that config validation can ask whether this process is one of several.
"""

import os
from dataclasses import dataclass

# torchrun's (and torch's elastic launch's) description of this process's place in the run
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Placement:
    """Where this process sits in a data-parallel run, as torchrun describes it in the environment."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_environment(cls) -> "Placement | None":
        """The placement torchrun or torch's elastic launch gave this process; None outside them (or for one)."""
        if any(name not in os.environ for name in RANK_VARIABLES) or int(os.environ["WORLD_SIZE"]) < 2:
            return None
        world = int(os.environ["WORLD_SIZE"])
        return cls(
            int(os.environ["RANK"]),
            world,
            int(os.environ["LOCAL_RANK"]),
            int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        )


def available_cores() -> int:
    """Cores this process may use: its CPU affinity where the OS has one (Linux), else every core (macOS, Windows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
