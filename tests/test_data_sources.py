"""The data sources read tiny files written here in the official on-disk formats.

CIFAR-10 python batches (Python 2 pickles), MNIST / Fashion-MNIST idx files, image folders (PNG / JPEG,
with the decode cache), the synthetic set, the seeded holdout split and the batched augmentation.
"""

import functools
import hashlib
import http.server
import io
import logging
import os
import pickle
import shutil
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image

from cnnlab.data import imagefolder
from cnnlab.data.augment import BatchAugment, random_crop, random_flip
from cnnlab.data.build import build_data, holdout_count, split_holdout
from cnnlab.data.cifar import CLASSES as CIFAR_CLASSES
from cnnlab.data.cifar import load_cifar10
from cnnlab.data.imagefolder import load_image_folder
from cnnlab.data.loader import BatchOrigin
from cnnlab.data.mnist import load_mnist
from cnnlab.data.synthetic import make_synthetic
from cnnlab.data.types import ImageSet
from cnnlab.errors import UserError

# --------------------------------------------------------------------------------------------------
# CIFAR-10: the official batches are protocol-2 pickles written by Python 2's cPickle, so their keys
# and the array's raw bytes are Python 2 `str` objects (SHORT_BINSTRING / BINSTRING opcodes). Read with
# encoding="latin1" (as torchvision and cnnlab do) those keys come back as "data" / "labels". A Python 3
# pickle.dump cannot produce that, so the files are assembled opcode by opcode here.
# --------------------------------------------------------------------------------------------------


def _py2_str(value: str | bytes) -> bytes:
    raw = value.encode("latin1") if isinstance(value, str) else value
    return b"U" + bytes([len(raw)]) + raw if len(raw) < 256 else b"T" + struct.pack("<i", len(raw)) + raw


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_uint8_array(array: np.ndarray) -> bytes:
    """An ndarray exactly as Python 2 numpy pickles it: _reconstruct, then BUILD with the raw bytes as a str."""
    assert array.dtype == np.uint8
    dtype = (
        b"cnumpy\ndtype\n("
        + _py2_str("u1")
        + b"K\x00K\x01tR"
        + b"(K\x03"
        + _py2_str("|")
        + b"NNN"
        + b"J\xff\xff\xff\xff" * 2
        + b"K\x00tb"
    )
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(K\x00t"
        + _py2_str("b")
        + b"tR"
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89"
        + _py2_str(np.ascontiguousarray(array).tobytes())
        + b"tb"
    )


def _py2_value(value: object) -> bytes:
    if isinstance(value, np.ndarray):
        return _py2_uint8_array(value)
    if isinstance(value, (str, bytes)):
        return _py2_str(value)
    if isinstance(value, int):
        return _py2_int(value)
    if isinstance(value, list):
        return b"]" + (b"(" + b"".join(_py2_value(v) for v in value) + b"e" if value else b"")
    raise TypeError(type(value))


def py2_pickle(entry: dict[str, object]) -> bytes:
    """A protocol-2 pickle of a flat dict with Python 2 str keys, like the files in cifar-10-python.tar.gz."""
    items = b"".join(_py2_str(k) + _py2_value(v) for k, v in entry.items())
    return b"\x80\x02}(" + items + b"u."


def cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """N x 3072 rows: the red plane, then green, then blue, each 32x32 in row-major order."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)


def write_cifar(
    root: Path, per_batch: int = 3, test_count: int = 4, seed: int = 0
) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """Write cifar-10-batches-py/ under root; returns (train HWC images, train labels, test HWC images, test labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_images, train_labels = [], []
    for b in range(1, 6):
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        entry = {
            "batch_label": f"training batch {b} of 5",
            "labels": labels,
            "data": cifar_rows(images),
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        }
        (folder / f"data_batch_{b}").write_bytes(py2_pickle(entry))
        train_images.append(images)
        train_labels += labels
    test_images = rng.integers(0, 256, (test_count, 32, 32, 3), dtype=np.uint8)
    test_labels = [int(x) for x in rng.integers(0, 10, test_count)]
    (folder / "test_batch").write_bytes(
        py2_pickle(
            {
                "batch_label": "testing batch 1 of 1",
                "labels": test_labels,
                "data": cifar_rows(test_images),
                "filenames": [f"test_{i}.png" for i in range(test_count)],
            }
        )
    )
    (folder / "batches.meta").write_bytes(
        py2_pickle(
            {
                "num_cases_per_batch": per_batch,
                "label_names": list(CIFAR_CLASSES),
                "num_vis": 3072,
            }
        )
    )
    (folder / "readme.html").write_text("<html></html>")
    return np.concatenate(train_images), train_labels, test_images, test_labels


def as_nchw(images_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2)


def make_cifar_archive(tmp_path: Path) -> tuple[Path, str, tuple[np.ndarray, list[int], np.ndarray, list[int]]]:
    """cifar-10-python.tar.gz holding cifar-10-batches-py/ (as the official one does); returns (path, md5, contents)."""
    source = tmp_path / "archive-src"
    contents = write_cifar(source, seed=7)
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest(), contents


def test_cifar10_reads_official_python_batches(tmp_path: Path) -> None:
    """All five training batches then the test batch, pixels in CHW order, labels and class names from batches.meta."""
    train_hwc, train_labels, test_hwc, test_labels = write_cifar(tmp_path)
    data = load_cifar10(str(tmp_path), download=False)
    assert data.train.images.shape == (15, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test is not None and data.test.images.shape == (4, 3, 32, 32) and data.test.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64 and data.train.labels.tolist() == train_labels
    assert data.test.labels.tolist() == test_labels
    assert torch.equal(data.train.images, as_nchw(train_hwc))
    assert torch.equal(data.test.images, as_nchw(test_hwc))
    # A pixel by hand: image 4 is the second image of data_batch_2; channel 2 is blue.
    assert int(data.train.images[4, 2, 5, 17]) == int(train_hwc[4, 5, 17, 2])
    assert data.classes == CIFAR_CLASSES


def test_cifar10_class_names_come_from_batches_meta(tmp_path: Path) -> None:
    """The names are read from batches.meta when present, and fall back to the official list without it."""
    write_cifar(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    renamed = [f"kind{i}" for i in range(10)]
    meta.write_bytes(py2_pickle({"num_cases_per_batch": 3, "label_names": renamed, "num_vis": 3072}))
    assert load_cifar10(str(tmp_path), download=False).classes == renamed
    meta.unlink()
    assert load_cifar10(str(tmp_path), download=False).classes == CIFAR_CLASSES


@pytest.fixture
def http_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A throw-away HTTP server on 127.0.0.1 serving tmp_path/mirror; yields (base URL, folder)."""
    folder = tmp_path / "mirror"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_cifar10_downloads_and_extracts_archive_from_url(tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    """With no batches folder the archive is fetched from `url` (a mirror), checked against `md5`, unpacked and read."""
    base, _ = http_mirror
    archive, md5, (train_hwc, train_labels, test_hwc, test_labels) = make_cifar_archive(tmp_path)
    root = tmp_path / "data"
    data = load_cifar10(str(root), download=True, url=f"{base}/{archive.name}", md5=md5)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert torch.equal(data.train.images, as_nchw(train_hwc)) and data.train.labels.tolist() == train_labels
    assert data.test is not None and torch.equal(data.test.images, as_nchw(test_hwc))
    assert data.test.labels.tolist() == test_labels
    assert data.classes == CIFAR_CLASSES
    # Once unpacked, a second load reads the folder and never touches the (now gone) mirror.
    archive.unlink()
    again = load_cifar10(str(root), download=True, url=f"{base}/{archive.name}", md5=md5)
    assert torch.equal(again.train.images, data.train.images)


def test_cifar10_unpacks_archive_already_in_root(tmp_path: Path) -> None:
    """The offline route the error message suggests: cifar-10-python.tar.gz placed in root is checked and unpacked."""
    archive, md5, (train_hwc, _, _, _) = make_cifar_archive(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(archive, root / archive.name)
    unreachable = (tmp_path / "no-such-mirror" / archive.name).as_uri()
    data = load_cifar10(str(root), download=True, url=unreachable, md5=md5)
    assert torch.equal(data.train.images, as_nchw(train_hwc))


def test_cifar10_downloads_from_file_url(tmp_path: Path) -> None:
    """dataset.source.url=file:///path/cifar-10-python.tar.gz (a local mirror) downloads, unpacks and loads."""
    archive, md5, (train_hwc, _, _, _) = make_cifar_archive(tmp_path)
    data = load_cifar10(str(tmp_path / "data"), download=True, url=archive.as_uri(), md5=md5)
    assert torch.equal(data.train.images, as_nchw(train_hwc))


@pytest.mark.parametrize("member", ["../escaped.txt", "link"])
def test_cifar10_archive_that_writes_outside_its_folder_is_refused(tmp_path: Path, member: str) -> None:
    """A tampered mirror's archive cannot plant files outside dataset.root (path traversal or a symlink)."""
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        entry = tarfile.TarInfo(member)
        if member == "link":
            entry.type, entry.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(entry)
        else:
            entry.size = 5
            tar.addfile(entry, io.BytesIO(b"owned"))
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="not a plain file inside"):
        load_cifar10(str(tmp_path / "data"), download=True, url=archive.as_uri(), md5=md5)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "link").exists()


def test_cifar10_download_with_wrong_md5_is_a_user_error(tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    """A corrupted (checksum mismatch) download is refused with a UserError instead of being unpacked."""
    base, _ = http_mirror
    archive, _, _ = make_cifar_archive(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(UserError, match="download failed") as info:
        load_cifar10(str(root), url=f"{base}/{archive.name}", md5="0" * 32)
    assert "dataset=synthetic" in str(info.value)
    assert not (root / "cifar-10-batches-py").exists()


def test_cifar10_failed_download_names_dataset_root_and_synthetic(tmp_path: Path) -> None:
    """No data and an unreachable URL: one UserError naming cifar10, the root and the dataset=synthetic way out."""
    root = tmp_path / "nowhere" / "data"
    missing = (tmp_path / "no-such-mirror" / "cifar-10-python.tar.gz").as_uri()
    with pytest.raises(UserError) as info:
        load_cifar10(str(root), download=True, url=missing, md5="0" * 32)
    message = str(info.value)
    assert message.startswith("cifar10:")
    assert str(root) in message and "download failed" in message and "dataset=synthetic" in message


def test_cifar10_missing_with_download_off_is_a_user_error(tmp_path: Path) -> None:
    """download=False and no folder: a UserError that says download is off, without any network access."""
    with pytest.raises(UserError, match="download is off") as info:
        load_cifar10(str(tmp_path / "empty"), download=False)
    assert str(tmp_path / "empty") in str(info.value) and "dataset=synthetic" in str(info.value)


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path: Path) -> None:
    """A tampered batch whose pickle calls os.system is rejected before anything runs."""
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
            return os.system, (f"touch {marker}",)

    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(
        pickle.dumps({"data": Evil(), "labels": [0]}, protocol=2)
    )
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        load_cifar10(str(tmp_path), download=False)
    assert not marker.exists()


def test_cifar10_truncated_batch_is_a_user_error(tmp_path: Path) -> None:
    """A batch cut short (interrupted copy) gives a UserError naming the file, not a traceback."""
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(UserError, match="test_batch"):
        load_cifar10(str(tmp_path), download=False)


# --------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: big-endian idx files, magic 0x00000803 (uint8, 3 dims) and 0x00000801 (1 dim).
# --------------------------------------------------------------------------------------------------

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_CLASSES = [
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding: 0x00 0x00, type 0x08 (ubyte), number of dims, then each dim as a big-endian uint32."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(
    root: Path, variant: str, train_count: int = 5, test_count: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four uncompressed idx files under root/<variant>/raw and return what they hold."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train_count, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test_count, dtype=np.uint8),
    }
    raw = root / variant / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        (raw / name).write_bytes(idx_bytes(array))
    return arrays


def test_idx_writer_matches_the_documented_magic_numbers() -> None:
    """Guard for the helper itself: images start 00 00 08 03, labels 00 00 08 01, dims big-endian."""
    assert idx_bytes(np.zeros((2, 28, 28), np.uint8))[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert idx_bytes(np.zeros(300, np.uint8))[:8] == bytes.fromhex("000008010000012c")


@pytest.mark.parametrize(("variant", "classes"), [("MNIST", MNIST_CLASSES), ("FashionMNIST", FASHION_CLASSES)])
@pytest.mark.parametrize("download", [False, True])
def test_mnist_variants_read_idx_files(tmp_path: Path, variant: str, classes: list[str], download: bool) -> None:
    """Images come back as uint8 (N, 1, 28, 28) with the exact pixels, labels as int64; present files are kept."""
    arrays = write_mnist(tmp_path, variant, seed=len(variant))
    data = load_mnist(variant, str(tmp_path), download=download)
    assert data.train.images.shape == (5, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test is not None and data.test.images.shape == (3, 1, 28, 28) and data.test.images.dtype == torch.uint8
    assert torch.equal(data.train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert data.train.labels.dtype == torch.int64
    assert data.train.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.classes == classes
    assert data.train.images.is_contiguous()


def test_mnist_reads_its_own_variant_folder(tmp_path: Path) -> None:
    """MNIST and FashionMNIST under one root stay apart: each loader reads <root>/<variant>/raw only."""
    digits = write_mnist(tmp_path, "MNIST", seed=1)
    clothes = write_mnist(tmp_path, "FashionMNIST", train_count=4, seed=2)
    assert torch.equal(
        load_mnist("MNIST", str(tmp_path), download=False).train.images[:, 0],
        torch.from_numpy(digits["train-images-idx3-ubyte"]),
    )
    assert torch.equal(
        load_mnist("FashionMNIST", str(tmp_path), download=False).train.images[:, 0],
        torch.from_numpy(clothes["train-images-idx3-ubyte"]),
    )


def test_mnist_missing_with_download_off_is_a_user_error(tmp_path: Path) -> None:
    """No idx files and download off: a UserError naming the variant, its raw folder and dataset=synthetic."""
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / IDX_NAMES[0]).write_bytes(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    with pytest.raises(UserError) as info:
        load_mnist("MNIST", str(tmp_path), download=False)
    message = str(info.value)
    assert message.startswith("MNIST:") and str(tmp_path / "MNIST" / "raw") in message
    assert "download is off" in message and "dataset=synthetic" in message


def test_mnist_unknown_variant_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="KMNIST"):
        load_mnist("KMNIST", str(tmp_path), download=False)


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html>proxy error</html>", b""], ids=["html", "empty"])
def test_mnist_corrupt_idx_file_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    """A file that is not idx at all (an HTML error page, an empty file) should give the one-line UserError."""
    write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(content)
    with pytest.raises(UserError, match="MNIST"):
        load_mnist("MNIST", str(tmp_path), download=False)


# --------------------------------------------------------------------------------------------------
# Image folders.
# --------------------------------------------------------------------------------------------------


def save_image(path: Path, array: np.ndarray, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def write_class_images(
    folder: Path, counts: dict[str, int], rng: np.random.Generator, size: int = 8
) -> dict[str, list[np.ndarray]]:
    """PNG files folder/<class>/img<i>.png with random RGB pixels; returns the HWC arrays per class in file order."""
    written: dict[str, list[np.ndarray]] = {}
    for name, count in counts.items():
        written[name] = []
        for i in range(count):
            array = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            save_image(folder / name / f"img{i}.png", array)
            written[name].append(array)
    return written


def expected(written: dict[str, list[np.ndarray]]) -> tuple[torch.Tensor, list[int]]:
    """Images (NCHW) and labels in the loader's order: classes sorted by name, files sorted within a class."""
    images, labels = [], []
    for label, name in enumerate(sorted(written)):
        images += written[name]
        labels += [label] * len(written[name])
    return as_nchw(np.stack(images)), labels


def all_images(data: ImageSet) -> torch.Tensor:
    """The set's own images (a split or class subset is a selection of rows of a shared tensor)."""
    return data.gather(torch.arange(len(data)))


def test_imagefolder_train_and_test_layout(tmp_path: Path) -> None:
    """root/train/<class> + root/test/<class>: sorted class names, per-class counts, exact PNG pixels and labels."""
    rng = np.random.default_rng(0)
    train = write_class_images(tmp_path / "train", {"zebra": 2, "cat": 3, "dog": 1}, rng)
    test = write_class_images(tmp_path / "test", {"zebra": 1, "cat": 1, "dog": 2}, rng)
    data = load_image_folder(str(tmp_path))
    assert data.classes == ["cat", "dog", "zebra"]
    train_images, train_labels = expected(train)
    test_images, test_labels = expected(test)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (6, 3, 8, 8)
    assert data.train.labels.dtype == torch.int64 and data.train.labels.tolist() == train_labels == [0, 0, 0, 1, 2, 2]
    assert torch.equal(data.train.images, train_images)
    assert data.test is not None and data.test.labels.tolist() == test_labels == [0, 1, 1, 2]
    assert torch.equal(data.test.images, test_images)


def test_imagefolder_flat_layout_has_no_test_split(tmp_path: Path) -> None:
    """root/<class>/*: every class folder is a class and there is no test split."""
    written = write_class_images(tmp_path, {"b": 2, "a": 1, "c": 2}, np.random.default_rng(1))
    data = load_image_folder(str(tmp_path))
    images, labels = expected(written)
    assert data.classes == ["a", "b", "c"] and data.test is None
    assert data.train.labels.tolist() == labels and torch.equal(data.train.images, images)


def test_imagefolder_grayscale_resize_and_jpeg(tmp_path: Path) -> None:
    """channels=1 reads an L-mode PNG exactly; image_size resizes every image; a JPEG decodes close to its colour."""
    gray = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    save_image(tmp_path / "g" / "x.png", gray)
    save_image(tmp_path / "j" / "x.jpg", np.full((16, 16, 3), (200, 40, 90), np.uint8), quality=95)
    one = load_image_folder(str(tmp_path), channels=1)
    assert one.train.images.shape == (2, 1, 8, 8)  # the JPEG (16x16) follows the first image's size
    assert torch.equal(one.train.images[0, 0], torch.from_numpy(gray))
    rgb = load_image_folder(str(tmp_path), image_size=4)
    assert rgb.train.images.shape == (2, 3, 4, 4) and rgb.train.images.dtype == torch.uint8
    jpeg = rgb.train.images[1].to(torch.int16)
    assert (jpeg - torch.tensor([200, 40, 90], dtype=torch.int16)[:, None, None]).abs().max() <= 3
    # The grey PNG decoded as RGB has three equal channels, and downsizing keeps its mean brightness.
    assert torch.equal(rgb.train.images[0, 0], rgb.train.images[0, 2])
    assert abs(rgb.train.images[0].float().mean() - float(gray.mean())) < 3


def test_imagefolder_test_split_resized_to_train_size(tmp_path: Path) -> None:
    """Without image_size, test images of another size are resized to the training images' size."""
    write_class_images(tmp_path / "train", {"a": 1, "b": 1}, np.random.default_rng(3), size=8)
    write_class_images(tmp_path / "test", {"a": 1, "b": 1}, np.random.default_rng(4), size=12)
    data = load_image_folder(str(tmp_path))
    assert data.test is not None and data.test.images.shape == (2, 3, 8, 8)


def test_imagefolder_skips_non_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Other suffixes and hidden files are ignored silently; a .png that does not decode is skipped with a warning."""
    written = write_class_images(tmp_path, {"a": 2, "b": 1}, np.random.default_rng(5))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "b" / "broken.png").write_bytes(b"this is not a png")
    with caplog.at_level(logging.WARNING, logger=imagefolder.__name__):
        data = load_image_folder(str(tmp_path))
    images, labels = expected(written)
    assert data.train.labels.tolist() == labels and torch.equal(data.train.images, images)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken.png" in warnings[0].getMessage() and "skipping" in warnings[0].getMessage()


def png_declaring(width: int, height: int, data_bytes: int = 4096) -> bytes:
    """A small grayscale PNG whose header declares width x height, with `data_bytes` of zero image data.

    A huge size with little data is the shape of a decompression bomb; (height x (width + 1)) bytes is a
    complete image, fewer is a damaged one.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(data_bytes))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_imagefolder_skips_decompression_bombs_before_decoding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Headers over max_pixels, and over Pillow's own limit, are skipped with a warning; nothing huge is allocated."""
    written = write_class_images(tmp_path, {"a": 1, "b": 1}, np.random.default_rng(6))
    (tmp_path / "a" / "bomb.png").write_bytes(png_declaring(9_000, 9_000))  # 81 Mpx: 243 MB once decoded as RGB
    (tmp_path / "b" / "huge.png").write_bytes(png_declaring(60_000, 60_000))  # beyond Pillow's own guard too
    (tmp_path / "b" / "small.png").write_bytes(png_declaring(100, 100, 100 * 101))
    with caplog.at_level(logging.WARNING, logger=imagefolder.__name__):
        data = load_image_folder(str(tmp_path), max_pixels=5_000)
    images, labels = expected(written)
    assert data.train.labels.tolist() == labels and torch.equal(data.train.images, images)
    skipped = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "bomb.png (9000x9000 pixels is over dataset.source.max_pixels=5000" in skipped
    assert "huge.png" in skipped and "small.png" in skipped  # 100x100 is over 5000 pixels as well
    assert load_image_folder(str(tmp_path), max_pixels=20_000).train.labels.tolist() == [0, 1, 1]  # small.png decodes


def test_imagefolder_skips_a_png_with_missing_image_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Short image data behind a valid header is a warning, not a crash (torchvision's decoder segfaults on it)."""
    write_class_images(tmp_path, {"a": 1, "b": 1}, np.random.default_rng(7))
    (tmp_path / "a" / "short.png").write_bytes(png_declaring(100, 100, 4096))
    with caplog.at_level(logging.WARNING, logger=imagefolder.__name__):
        data = load_image_folder(str(tmp_path))
    assert data.train.labels.tolist() == [0, 1]
    assert any("short.png (not a readable image" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [None, "notes.txt"], ids=["empty", "only-text"])
def test_imagefolder_class_without_images_is_a_user_error(tmp_path: Path, content: str | None) -> None:
    """A class folder with no image files (empty, or only other files) is a UserError naming that folder."""
    write_class_images(tmp_path / "train", {"a": 1}, np.random.default_rng(6))
    (tmp_path / "train" / "b").mkdir()
    if content:
        (tmp_path / "train" / "b" / content).write_text("x")
    with pytest.raises(UserError, match="has no images") as info:
        load_image_folder(str(tmp_path))
    assert str(tmp_path / "train" / "b") in str(info.value)


def test_imagefolder_bad_roots_are_user_errors(tmp_path: Path) -> None:
    """A missing root, a root without class folders, a test split missing a class, and a bad channel count."""
    with pytest.raises(UserError, match="is not a folder"):
        load_image_folder(str(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    save_image(tmp_path / "flat" / "loose.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match="no class subfolders"):
        load_image_folder(str(tmp_path / "flat"))
    write_class_images(tmp_path / "split" / "train", {"a": 1, "b": 1}, np.random.default_rng(7))
    write_class_images(tmp_path / "split" / "test", {"a": 1}, np.random.default_rng(8))
    with pytest.raises(UserError, match="is missing"):
        load_image_folder(str(tmp_path / "split"))
    with pytest.raises(UserError, match="channels=2"):
        load_image_folder(str(tmp_path / "split" / "train"), channels=2)


class DecodeCounter:
    """Wraps imagefolder._decode_into to count how many splits are really decoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = imagefolder._decode_into

        def counting(*args: object, **kwargs: object) -> torch.Tensor:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(imagefolder, "_decode_into", counting)


def test_imagefolder_cache_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load reads the cached tensors; adding or editing an image, or other decode settings, decode again."""
    root, cache = tmp_path / "images", tmp_path / "cache"
    write_class_images(root / "train", {"a": 2, "b": 2}, np.random.default_rng(9))
    write_class_images(root / "test", {"a": 1, "b": 1}, np.random.default_rng(10))
    counter = DecodeCounter(monkeypatch)

    first = load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 2  # train and test
    assert len(list(cache.glob("imagefolder-*"))) == 1

    second = load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 2, "an unchanged folder must come from the cache"
    assert torch.equal(second.train.images, first.train.images) and torch.equal(second.train.labels, first.train.labels)
    assert second.test is not None and first.test is not None and torch.equal(second.test.images, first.test.images)
    assert second.classes == first.classes == ["a", "b"]

    added = np.random.default_rng(11).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    save_image(root / "train" / "b" / "img9.png", added)
    third = load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 4, "an added file must invalidate the cache"
    assert len(third.train) == 5 and torch.equal(third.train.images[-1], torch.from_numpy(added).permute(2, 0, 1))
    assert len(list(cache.glob("imagefolder-*"))) == 2

    # Editing a file in place (same name and size, new pixels and mtime) is noticed too.
    edited = np.zeros((8, 8, 3), np.uint8)
    path = root / "train" / "a" / "img0.png"
    stat = path.stat()
    save_image(path, edited)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fourth = load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 6 and torch.equal(fourth.train.images[0], torch.zeros(3, 8, 8, dtype=torch.uint8))

    load_image_folder(str(root), cache_dir=str(cache), image_size=4)
    assert counter.calls == 8, "another image_size is another cache entry"
    load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 8


def test_imagefolder_unreadable_cache_is_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A torn cache file is ignored with a warning and the folder is decoded again."""
    root, cache = tmp_path / "images", tmp_path / "cache"
    written = write_class_images(root, {"a": 1, "b": 1}, np.random.default_rng(12))
    load_image_folder(str(root), cache_dir=str(cache))
    (cache_file,) = cache.glob("imagefolder-*/train.u8")
    cache_file.write_bytes(cache_file.read_bytes()[:40])
    counter = DecodeCounter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=imagefolder.__name__):
        data = load_image_folder(str(root), cache_dir=str(cache))
    assert counter.calls == 1 and torch.equal(data.train.images, expected(written)[0])
    assert any("unreadable cache" in r.getMessage() for r in caplog.records)


def test_imagefolder_over_the_memory_limit_is_memory_mapped(
    tmp_path: Path, compose_train: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """Over memory_limit_gb the cache file is mapped, not read; splits and class subsets stay mapped, and every
    training and validation batch is exactly what the in-memory path serves (so runs do not depend on the path)."""
    root, cache = tmp_path / "images", tmp_path / "cache"
    written = write_class_images(root / "train", {"a": 9, "b": 7, "c": 8}, np.random.default_rng(14))
    write_class_images(root / "test", {"a": 2, "b": 2, "c": 1}, np.random.default_rng(15))
    with caplog.at_level(logging.INFO, logger=imagefolder.__name__):
        mapped = load_image_folder(str(root), cache_dir=str(cache), memory_limit_gb=0)
    assert mapped.train.mapped and mapped.test is not None and mapped.test.mapped
    if Path("/proc/self/maps").exists():  # Linux shows the mapping itself
        assert str(cache) in Path("/proc/self/maps").read_text()
    assert torch.equal(all_images(mapped.train), expected(written)[0])
    assert any("29 images memory-mapped from the cache" in r.getMessage() for r in caplog.records)
    held = load_image_folder(str(root), cache_dir=str(cache))  # the same cache entry, read into memory
    assert not held.train.mapped
    assert torch.equal(held.train.images, all_images(mapped.train))

    common = ["dataset=imagefolder", f"dataset.root={root}", f"dataset.source.cache_dir={cache}", "dataset.val_size=5"]
    bundles = {
        limit: build_data(
            compose_train([*common, f"dataset.source.memory_limit_gb={limit}", "dataset.classes=[a,c]"]).dataset,
            batch_size=4,
            eval_batch_size=3,
            device=torch.device("cpu"),
            seed=2,
            channels_last=False,
        )
        for limit in (0, 10)
    }
    assert bundles[0].train.data.mapped and bundles[0].val.data.mapped and not bundles[10].train.data.mapped
    assert bundles[0].card() == bundles[10].card()
    for split in ("train", "val", "test"):
        for (x, y), (x_held, y_held) in zip(getattr(bundles[0], split), getattr(bundles[10], split), strict=True):
            assert torch.equal(x, x_held) and torch.equal(y, y_held)


def test_imagefolder_over_the_memory_limit_without_a_cache_is_a_user_error(tmp_path: Path) -> None:
    write_class_images(tmp_path, {"a": 1, "b": 1}, np.random.default_rng(16))
    with pytest.raises(UserError, match="over the memory limit of 0 B; set dataset.source.cache_dir"):
        load_image_folder(str(tmp_path), memory_limit_gb=0)
    for bad in (-1, "lots", True):
        with pytest.raises(UserError, match=f"dataset.source.memory_limit_gb={bad!r} is invalid"):
            load_image_folder(str(tmp_path), memory_limit_gb=bad)


# --------------------------------------------------------------------------------------------------
# Synthetic data, the holdout split and the dataset configs.
# --------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_by_seed() -> None:
    """Same arguments give identical tensors; another seed gives other images and labels."""
    a = make_synthetic(64, 16, image_size=16, seed=5)
    b = make_synthetic(64, 16, image_size=16, seed=5)
    c = make_synthetic(64, 16, image_size=16, seed=6)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.train.labels, b.train.labels)
    assert a.test is not None and b.test is not None and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, c.train.images)
    assert not torch.equal(a.train.labels, c.train.labels)
    assert not torch.equal(a.train.images[:16], a.test.images), "the test split is drawn after the training pool"


@pytest.mark.parametrize(("channels", "classes"), [(3, 10), (1, 4), (2, 7)])
def test_synthetic_shapes_and_labels(channels: int, classes: int) -> None:
    """uint8 NCHW images of the requested size and channels, int64 labels covering 0..num_classes-1."""
    data = make_synthetic(200, 0, image_size=12, channels=channels, num_classes=classes, seed=1)
    assert data.test is None
    assert data.train.images.shape == (200, channels, 12, 12) and data.train.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert set(data.train.labels.tolist()) == set(range(classes))
    assert data.classes == [f"class_{i}" for i in range(classes)]
    assert data.train.images.float().std() > 10, "images should not be flat"


def labelled_set(count: int) -> ImageSet:
    """Image i is filled with i % 256 and labelled i, so any mix-up between images and labels shows."""
    index = torch.arange(count)
    return ImageSet((index % 256).to(torch.uint8)[:, None, None, None].expand(count, 1, 2, 2).clone(), index)


@pytest.mark.parametrize(("val_size", "count"), [(25, 25), (0.2, 20), (1, 1)])
def test_holdout_split_is_seeded_disjoint_and_sized(val_size: int | float, count: int) -> None:
    """Same split_seed -> same split; the parts are disjoint, cover the pool, and keep images with their labels."""
    data = labelled_set(100)
    train, val = split_holdout(data, val_size, split_seed=3)
    train2, val2 = split_holdout(data, val_size, split_seed=3)
    assert len(val) == count and len(train) == 100 - count
    assert torch.equal(val.labels, val2.labels) and torch.equal(train.labels, train2.labels)
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert sorted(train.labels.tolist() + val.labels.tolist()) == list(range(100))
    for part in (train, val):
        assert torch.equal(all_images(part)[:, 0, 0, 0].long(), part.labels)
        assert part.images.data_ptr() == data.images.data_ptr(), "a split selects rows; it copies no pixels"


def test_holdout_split_depends_on_split_seed() -> None:
    """Another split_seed holds out other images, and the held-out images are not simply the last ones."""
    data = labelled_set(100)
    _, a = split_holdout(data, 10, split_seed=0)
    _, b = split_holdout(data, 10, split_seed=1)
    assert set(a.labels.tolist()) != set(b.labels.tolist())
    assert set(a.labels.tolist()) != set(range(90, 100))


@pytest.mark.parametrize("val_size", [0, 100, 150, 0.001, 1.0])
def test_holdout_sizes_that_leave_nothing_are_user_errors(val_size: int | float) -> None:
    with pytest.raises(UserError, match="dataset.val_size"):
        holdout_count(100, val_size)


def test_build_data_holds_out_val_size_from_the_synthetic_source(compose_train: Callable[..., DictConfig]) -> None:
    """build_data with the shipped synthetic config: val_size images held out by split_seed, test kept whole."""
    cfg = compose_train(["dataset=synthetic", "dataset.train_size=120", "dataset.test_size=30", "dataset.val_size=20"])
    bundle = build_data(
        cfg.dataset, batch_size=16, eval_batch_size=64, device=torch.device("cpu"), seed=0, channels_last=False
    )
    source = instantiate(cfg.dataset.source)
    train, val = split_holdout(source.train, 20, cfg.dataset.split_seed)
    assert len(bundle.train.data) == 100 and len(bundle.val.data) == 20
    assert bundle.test is not None and len(bundle.test.data) == 30
    assert torch.equal(all_images(bundle.val.data), all_images(val)) and torch.equal(
        bundle.train.data.labels, train.labels
    )
    assert bundle.input_shape == (3, 32, 32) and bundle.classes == source.classes


@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion_mnist", "imagefolder"])
def test_dataset_configs_load_files_from_root(
    name: str, tmp_path: Path, compose_train: Callable[..., DictConfig]
) -> None:
    """dataset=<name> dataset.root=<folder> instantiates the loader that reads the files written above."""
    overrides = [f"dataset={name}", f"dataset.root={tmp_path}"]
    if name == "cifar10":
        write_cifar(tmp_path)
        size = 15
    elif name == "imagefolder":
        write_class_images(tmp_path, {"x": 2, "y": 1}, np.random.default_rng(13))
        overrides.append(f"dataset.source.cache_dir={tmp_path / 'cache'}")
        size = 3
    else:
        write_mnist(tmp_path, "MNIST" if name == "mnist" else "FashionMNIST")
        size = 5
    source = instantiate(compose_train(overrides).dataset.source)
    assert len(source.train) == size and source.train.images.dtype == torch.uint8


# --------------------------------------------------------------------------------------------------
# Augmentation.
# --------------------------------------------------------------------------------------------------


def position_coded(n: int, channels: int = 2, size: int = 6) -> torch.Tensor:
    """Images whose every pixel value is unique within the image (and never 0), shifted by the image index."""
    base = 1 + torch.arange(channels * size * size).view(channels, size, size)
    return (base[None] + torch.arange(n)[:, None, None, None]).to(torch.uint8)


def test_random_crop_is_a_shifted_window_of_the_padded_image() -> None:
    """Each output equals exactly one (dy, dx) window of its own zero-padded input; windows vary across the batch."""
    images, padding = position_coded(40), 2
    out = random_crop(images, padding, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = []
    for i in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 6])
        ]
        assert len(matches) == 1, f"image {i} is not a window of its padded input"
        offsets.append(matches[0])
    assert len(set(offsets)) >= 8, "crop offsets should vary from image to image"
    assert any(dy != padding or dx != padding for dy, dx in offsets)
    assert torch.equal(out, random_crop(images, padding, torch.Generator().manual_seed(0)))


def test_random_flip_mirrors_width_for_some_images() -> None:
    """Every output is its input or the input mirrored left-right (last column first); both occur."""
    images = position_coded(64)
    out = random_flip(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    flipped = [bool(torch.equal(out[i], images[i].flip(-1))) for i in range(len(images))]
    kept = [bool(torch.equal(out[i], images[i])) for i in range(len(images))]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54
    i = flipped.index(True)
    assert torch.equal(out[i, :, :, 0], images[i, :, :, -1]) and torch.equal(
        out[i, :, 2, :], images[i, :, 2, :].flip(-1)
    )


def test_batch_augment_switches() -> None:
    """Crop and flip off leaves the batch untouched; RandAugment on keeps the uint8 shape."""
    images = position_coded(8)
    origin = BatchOrigin(torch.arange(8), epoch=0, seed=0)
    gen = torch.Generator().manual_seed(2)
    assert torch.equal(BatchAugment(crop_padding=0, flip=False)(images, origin, gen), images)
    crop_only = BatchAugment(crop_padding=1, flip=False)(images, origin, torch.Generator().manual_seed(3))
    assert torch.equal(crop_only, random_crop(images, 1, torch.Generator().manual_seed(3)))
    rand = BatchAugment(crop_padding=0, flip=False, randaugment=True, randaugment_group=4)(
        torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=gen),
        origin,
        gen,
    )
    assert rand.shape == (8, 3, 16, 16) and rand.dtype == torch.uint8
