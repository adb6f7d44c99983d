"""One writer per folder: an advisory lock on a file inside it, released by the OS when its process dies (even on SIGKILL)."""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import UserError

RUN_LOCK = ".run.lock"      # a training run (fresh or resumed) writing its folder
SWEEP_LOCK = ".sweep.lock"  # a sweep process asking, launching and recording trials


def busy_run(run_dir: Path) -> str:
    return f"another cnnlab process is writing {run_dir}; let it finish (or stop it) before resuming this run"


@contextmanager
def exclusive(folder: Path, lock_name: str, busy: str) -> Iterator[None]:
    """Hold the folder's lock, or raise UserError(busy): two writers would overwrite each other's work."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / lock_name, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy) from None
        yield


def is_locked(folder: Path, lock_name: str) -> bool:
    """True while a live process holds the folder's lock."""
    path = folder / lock_name
    if not path.is_file():
        return False
    with open(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
