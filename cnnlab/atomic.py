"""Write files so that a crash at any instant leaves either the old file or the new one, never a torn one.

Used by every part that writes results (checkpoints, metrics.json, reports, caches); torch is imported
only by `atomic_torch_save`, so the run-folder contract can use this module without it.
"""

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _sync_folder(folder: Path) -> None:
    """Make a rename durable. POSIX only: Windows cannot open a folder as a file, and its renames are journaled."""
    if os.name == "nt":
        return
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide results from the other users of a shared machine
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # name the file the user knows, not the temporary one
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _sync_folder(path.parent)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialize in memory first: torch.save turns a failed write into a RuntimeError without its errno,
    while a plain write keeps the OSError (no space left, file too large) that says what went wrong."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def atomic_bytes_write(data: bytes, path: Path) -> None:
    _atomic_write(path, lambda f: f.write(data))


def atomic_json_dump(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
