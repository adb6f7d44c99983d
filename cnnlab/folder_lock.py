"""One writer per folder: a lock on a file inside it, released by the OS when its process dies (even on SIGKILL).

filelock takes the lock with flock on Linux and macOS and with msvcrt on Windows; the lock file's
name says who holds it (cnnlab.run_folder.RUN_LOCK, SWEEP_LOCK).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cnnlab.errors import UserError


def busy_run(run_dir: Path) -> str:
    return f"another cnnlab process is writing {run_dir}; let it finish (or stop it) before resuming this run"


@contextmanager
def exclusive(folder: Path, lock_name: str, busy: str) -> Iterator[None]:
    """Hold the folder's lock, or raise UserError(busy): two writers would overwrite each other's work."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / lock_name, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(busy) from None
    try:
        yield
    finally:
        lock.release()


def is_locked(folder: Path, lock_name: str) -> bool:
    """True while a live process holds the folder's lock."""
    path = folder / lock_name
    if not path.is_file():
        return False
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False
