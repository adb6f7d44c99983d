"""PNG figures (curves, confusion matrix, samples, class distribution) and the `cnnlab data` overview task."""

import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from matplotlib.figure import Figure

from cnnlab.config.validate import validate_data_config
from cnnlab.data.overview import class_counts, pick_samples, summarize
from cnnlab.data.synthetic import make_synthetic
from cnnlab.errors import UserError
from cnnlab.tracking.picture import Picture, confusion_picture
from cnnlab.tracking.plots import (
    DPI,
    confusion_figure,
    save_class_distribution,
    save_curves,
    save_samples,
)

from conftest import run_dirs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SYNTHETIC = ["dataset=synthetic", "dataset.train_size=300", "dataset.test_size=100"]


def read_png(path: Path) -> tuple[int, int]:
    """(height, width) of a PNG that is complete and that matplotlib can decode."""
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"
    height, width = matplotlib.image.imread(path).shape[:2]
    return height, width


def history(epochs: int) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train/loss": 2 / e,
            "train/acc": 1 - 1 / (e + 1),
            "val/loss": 2.2 / e,
            "val/acc": 0.9 - 1 / (e + 1),
            "lr": 0.1,
        }
        for e in range(1, epochs + 1)
    ]


def test_curves_png_has_the_figure_size(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    save_curves(history(5), path)
    height, width = read_png(path)
    assert 800 <= width <= 1100 and 300 <= height <= 450  # 10 x 4 inches at 100 dpi, trimmed to its content
    save_curves(history(6), path)  # rewriting replaces the file in place
    assert read_png(path) == (height, width)


@pytest.mark.parametrize("num_classes", [3, 30])
def test_confusion_matrix_png(tmp_path: Path, num_classes: int) -> None:
    matrix = torch.randint(0, 20, (num_classes, num_classes)) + 50 * torch.eye(num_classes, dtype=torch.int64)
    classes = [f"class_{i}" for i in range(num_classes)]
    picture = confusion_picture({"confusion": matrix.tolist()}, classes)
    (tmp_path / "confusion.png").write_bytes(picture.png)
    height, width = read_png(tmp_path / "confusion.png")
    assert picture.pixels.shape == (height, width, 3) and picture.pixels.dtype == np.uint8
    expected = confusion_figure(matrix, classes).get_size_inches() * DPI
    assert 0.6 * expected[1] <= height <= 1.1 * expected[1] and 0.6 * expected[0] <= width <= 1.1 * expected[0]
    annotations = len(confusion_figure(matrix, classes).axes[0].texts)
    assert annotations == (num_classes**2 if num_classes <= 20 else 0)


def test_a_picture_is_drawn_once_however_many_sinks_show_it() -> None:
    drawn = []

    def draw() -> Figure:
        drawn.append(1)
        return confusion_figure(torch.eye(3, dtype=torch.int64), ["a", "b", "c"])

    picture = Picture(draw)
    assert not drawn  # nothing is drawn until a sink asks
    assert picture.png.startswith(PNG_SIGNATURE) and picture.pixels.ndim == 3 and picture.png == picture.png
    assert len(drawn) == 1


def test_samples_and_class_distribution_pngs(tmp_path: Path) -> None:
    source = make_synthetic(train_size=60, test_size=20, image_size=16, channels=1, num_classes=4)
    samples = pick_samples(source.train, 4, per_class=5)
    assert [len(s) for s in samples] == [min(5, n) for n in class_counts(source.train.labels, 4)]
    assert all(s.shape[1:] == (1, 16, 16) and s.dtype == torch.uint8 for s in samples)
    save_samples(samples, source.classes, 5, tmp_path / "samples.png")
    height, width = read_png(tmp_path / "samples.png")
    assert height >= 4 * 16 and width >= 5 * 16  # every tile is shown at least at its own size
    counts = {"train": class_counts(source.train.labels, 4), "test": class_counts(source.test.labels, 4)}
    save_class_distribution(counts, source.classes, tmp_path / "class_distribution.png")
    assert read_png(tmp_path / "class_distribution.png")[1] >= 400


def test_summary_counts_every_image() -> None:
    source = make_synthetic(train_size=50, test_size=0, num_classes=3)
    summary = summarize(source)
    assert summary["test"] is None and summary["total_images"] == 50
    assert sum(summary["train"]["per_class"].values()) == 50
    assert summary["image_size"] == [32, 32] and summary["channels"] == 3
    assert all(0 < m < 1 for m in summary["mean"]) and all(0 < s < 0.5 for s in summary["std"])


def test_data_task_prints_and_writes_the_overview(run_cnnlab, tmp_path: Path) -> None:
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        source = instantiate(compose(config_name="data", overrides=SYNTHETIC).dataset.source)
    train = class_counts(source.train.labels, len(source.classes))
    test = class_counts(source.test.labels, len(source.classes))

    result = run_cnnlab("data", *SYNTHETIC, timeout=120)
    assert result.returncode == 0, result.stderr
    for name, n_train, n_test in zip(source.classes, train, test):
        assert any(
            name in line and f" {n_train} " in line and f" {n_test} " in line for line in result.stdout.splitlines()
        )
    assert "32x32" in result.stdout and "400" in result.stdout

    (run,) = run_dirs(tmp_path / "outputs" / "data")
    assert run.parent.name == "synthetic" and str(run) in result.stdout
    overview = json.loads((run / "overview.json").read_text())
    assert overview["dataset"] == "synthetic" and overview["classes"] == source.classes
    assert overview["train"] == {"total": 300, "per_class": dict(zip(source.classes, train))}
    assert overview["test"] == {"total": 100, "per_class": dict(zip(source.classes, test))}
    assert overview["total_images"] == 400 and len(overview["mean"]) == len(overview["std"]) == 3
    for name in ("samples.png", "class_distribution.png"):
        read_png(run / name)
    assert (run / "data.log").is_file()


@pytest.mark.parametrize(
    ("override", "message"),
    [("samples_per_class=0", "samples_per_class=0 is invalid")],
)
def test_data_config_errors_name_the_key(override: str, message: str) -> None:
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        cfg = compose(config_name="data", overrides=[*SYNTHETIC, override])
    with pytest.raises(UserError, match=re.escape(message)):
        validate_data_config(cfg)
