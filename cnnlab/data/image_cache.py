"""Where an image folder's decoded pixels live: in memory, or memory-mapped from the cache on disk when
they would not fit within the memory limit.

A cache entry is a folder: one raw uint8 file per split (rows of channels x height x width bytes) and
meta.pt (the shape and the labels), written last and renamed into place with the folder, so an entry that
exists is complete. Raw rows can be read whole into memory or mapped, so one entry serves both paths.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from cnnlab.atomic import atomic_torch_save
from cnnlab.data.types import ImageSet
from cnnlab.errors import UserError

log = logging.getLogger(__name__)
GIB = 1024**3


def available_memory() -> int:
    """Bytes of memory the system can give without swapping (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_limit(setting: object) -> int:
    """`dataset.source.memory_limit_gb` in bytes: `auto` is half the memory available now."""
    if setting == "auto":
        return available_memory() // 2
    if isinstance(setting, bool) or not isinstance(setting, int | float) or setting < 0:
        raise UserError(
            f"dataset.source.memory_limit_gb={setting!r} is invalid: use auto (half the available memory), "
            "a number of GiB such as 8, or 0 to always memory-map"
        )
    return int(setting * GIB)


def describe_bytes(count: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


class CacheEntry:
    """One decoded image folder on disk, under `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def exists(self) -> bool:
        return (self.folder / "meta.pt").is_file()

    def read(self, mapped: bool) -> dict[str, ImageSet] | None:
        """The splits, read into memory or mapped; None (with a warning) when the entry is damaged."""
        try:
            meta = torch.load(self.folder / "meta.pt", weights_only=True)
            return {
                split: self._split(split, labels, tuple(meta["shape"]), mapped)
                for split, labels in meta["labels"].items()
            }
        except (RuntimeError, OSError, KeyError, EOFError, ValueError) as e:
            log.warning("imagefolder: ignoring unreadable cache %s (%s)", self.folder, e)
            shutil.rmtree(self.folder, ignore_errors=True)
            return None

    def _split(self, split: str, labels: torch.Tensor, shape: tuple[int, ...], mapped: bool) -> ImageSet:
        path = self.folder / f"{split}.u8"
        count, row = len(labels), int(torch.Size(shape).numel())
        if path.stat().st_size != count * row:
            raise ValueError(f"{path.name} holds {path.stat().st_size} bytes, expected {count * row}")
        if mapped:
            images = torch.from_file(str(path), shared=False, size=count * row, dtype=torch.uint8)
            return ImageSet(images.view(count, *shape), labels, mapped=True)
        return ImageSet(torch.from_numpy(np.fromfile(path, dtype=np.uint8)).view(count, *shape), labels)

    @contextmanager
    def writing(self, shape: tuple[int, ...], counts: dict[str, int]) -> Iterator["CacheWriter"]:
        """Files to decode into; on success they become this entry in one rename, on failure they vanish."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}."))
        try:
            writer = CacheWriter(staging, shape, counts)
            yield writer
            writer.finish()
            try:
                staging.rename(self.folder)
            except OSError:
                if not self.exists():  # another process finishing the same entry first is fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class CacheWriter:
    """Memory-mapped files of a fixed number of rows; the decoder fills them, `finish` trims unused rows."""

    def __init__(self, folder: Path, shape: tuple[int, ...], counts: dict[str, int]) -> None:
        self.folder, self.shape = folder, shape
        self.row = int(torch.Size(shape).numel())
        self.targets: dict[str, torch.Tensor] = {}
        self.labels: dict[str, torch.Tensor] = {}
        for split, count in counts.items():
            path = folder / f"{split}.u8"
            with open(path, "wb") as f:
                # Reserve the space now: running out of disk while writing through a mapping kills the process.
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(f.fileno(), 0, max(1, count * self.row))
                else:
                    f.truncate(count * self.row)
            self.targets[split] = torch.from_file(
                str(path), shared=True, size=count * self.row, dtype=torch.uint8
            ).view(count, *shape)

    def finish(self) -> None:
        kept = {split: len(labels) for split, labels in self.labels.items()}
        self.targets.clear()  # unmaps the files before they are cut to the rows actually decoded
        for split, count in kept.items():
            path = self.folder / f"{split}.u8"
            os.truncate(path, count * self.row)
            fd = os.open(path, os.O_RDWR)
            try:
                os.fsync(fd)  # the pixels reach the disk before meta.pt says the entry is complete
            finally:
                os.close(fd)
        atomic_torch_save({"shape": list(self.shape), "labels": self.labels}, self.folder / "meta.pt")
