"""Where the performance benchmarks get their data: synthetic images by default, or a CIFAR-10 image folder.

`--data` takes an image folder or the .tar.gz of one (such as a CIFAR-10 image-folder copy). An archive
is unpacked once into a fixed folder under the cnnlab cache, with the archive's file times, so later
runs find cnnlab's decoded-image cache valid instead of decoding 50,000 JPEGs again.
"""

import argparse
import os
import tarfile
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        help="an image folder or its .tar.gz, e.g. cifar10-jpeg.tar.gz (default: synthetic data)",
    )


def image_folder(data: Path) -> Path:
    """The folder to train on: `data` itself, or where its archive is (or was already) unpacked."""
    if data.is_dir():
        return data.resolve()
    if not data.is_file():
        raise SystemExit(f"--data {data}: no such folder or archive")
    cache = Path(os.environ.get("CNNLAB_CACHE", Path.home() / ".cache" / "cnnlab")) / "benchmark-data"
    target = cache / data.name.removesuffix(".gz").removesuffix(".tar")
    done = target / ".unpacked"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as archive:
            archive.extractall(target, filter="data")
        done.touch()
    return _dataset_root(target)


def _dataset_root(folder: Path) -> Path:
    """Step into an archive's single top folder (cifar10-jpeg/) until the split or class folders show."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "test"):
        return _dataset_root(entries[0])
    return folder


def dataset_overrides(data: Path | None, synthetic_train_size: int = 10_000) -> list[str]:
    """Train overrides that select the data: the held-out validation split is 10% of the images either way."""
    if data is None:
        return [
            "dataset=synthetic",
            f"dataset.train_size={synthetic_train_size}",
            "dataset.val_size=0.1",
            "dataset.test_size=1000",
        ]
    return ["dataset=imagefolder", f"dataset.root={image_folder(data)}", "dataset.val_size=0.1"]


def compose_train(overrides: list[str]) -> DictConfig:
    """The train config exactly as `cnnlab train <overrides>` composes it."""
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides)
