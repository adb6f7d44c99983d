"""CIFAR-10 from the official python batches (cifar-10-batches-py/), downloaded when missing.

The batches are pickles; they are read with an unpickler that only admits the few numpy
constructors the format needs, so a tampered data folder cannot run code.
"""

import hashlib
import pickle
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import torch

from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as e:
        raise UserError(f"cifar10: {path} is not a readable CIFAR-10 batch ({e}); delete it to download again") from e
    return data, labels


def _read_split(folder: Path, names: list[str]) -> ImageSet:
    parts = [_read_batch(folder / name) for name in names]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels)


def _read_classes(folder: Path) -> list[str]:
    meta = folder / "batches.meta"
    if not meta.exists():
        return list(CLASSES)
    with open(meta, "rb") as f:
        return [str(name) for name in _BatchUnpickler(f, encoding="latin1").load()["label_names"]]


def _unpack(archive: Path, root: Path) -> None:
    """Extract the archive into root, refusing links, devices and members that would land outside it."""
    base = root.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()) or not (base / member.name).resolve().is_relative_to(base):
                raise RuntimeError(
                    f"{archive} holds {member.name!r}, which is not a plain file inside {root}; not unpacking it"
                )
        tar.extractall(base, members=members)


def _verified(archive: Path, md5: str) -> bool:
    if not archive.is_file():
        return False
    digest = hashlib.md5()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == md5


def _fetch(url: str, root: Path, md5: str) -> None:
    """Get the archive into root unless a verified copy is there (file:// mirrors are copied), then unpack it."""
    archive = root / ARCHIVE
    if not _verified(archive, md5):
        if url.startswith("file://"):
            root.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(url2pathname(urlparse(url).path), archive)
        else:
            from torchvision.datasets.utils import download_url  # only for a real download: 1.7 s to import

            download_url(url, str(root), filename=ARCHIVE, md5=md5)
        if not _verified(archive, md5):
            raise RuntimeError(f"{archive} from {url} does not match md5 {md5}")
    _unpack(archive, root)


def load_cifar10(root: str, download: bool = True, url: str | None = None, md5: str | None = None) -> SourceData:
    """Read CIFAR-10 under `root`, downloading and checking the official archive first if needed."""
    folder = Path(root).expanduser() / BATCH_DIR
    if not folder.is_dir() and download:
        try:
            _fetch(url or OFFICIAL_URL, Path(root).expanduser(), md5 or OFFICIAL_MD5)
        except (URLError, OSError, RuntimeError) as e:
            raise UserError(
                f"cifar10: no data in {folder} and the download failed ({e}); put {ARCHIVE} in "
                f"{Path(root).expanduser()}, set dataset.root=<folder with it>, or use dataset=synthetic"
            ) from e
    if not folder.is_dir():
        raise UserError(
            f"cifar10: no data in {folder} (download is off); put {ARCHIVE} there unpacked, "
            "set dataset.root=<folder with it>, or use dataset=synthetic"
        )
    return SourceData(_read_split(folder, TRAIN_BATCHES), _read_split(folder, [TEST_BATCH]), _read_classes(folder))
