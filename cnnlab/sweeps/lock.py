"""One sweep process per sweep folder, held by an advisory lock on a file inside it."""

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnlab.errors import UserError

LOCK_FILE = ".sweep.lock"


@contextmanager
def exclusive(sweep_dir: Path) -> Iterator[None]:
    """Hold the folder's lock: a second sweep on the same folder would run the same trials twice."""
    with open(sweep_dir / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another sweep is running in {sweep_dir}; wait for it or use another hydra.sweep.dir") from None
        yield


def sweep_is_running(sweep_dir: Path) -> bool:
    """True while a cnnlab sweep holds the folder (the lock dies with its process, even on SIGKILL)."""
    path = sweep_dir / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
