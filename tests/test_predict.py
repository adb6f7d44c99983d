"""`cnnlab predict`: a tiny model trained through the real CLI on colour-coded PNGs, then asked about images.

Each class is one clear colour with pixel noise, so a few epochs learn it; images the test puts in the
wrong class folder give the labelled-folder checks mistakes to find. The first test runs the installed
`predict` command; the others call the same entry point in this process (conftest.cli_in_process), which
spares each the 5-8 s a new interpreter spends importing torch.
"""

import csv
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import UserError
from cnnlab.inference.predict import class_folders, true_labels
from cnnlab.training.metrics import precision_recall_f1

from conftest import run_cli

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}
CLASSES = sorted(COLOURS)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png(path: Path, colour: tuple[int, int, int], seed: int, size: int = 16) -> Path:
    noise = np.random.default_rng(seed).integers(-30, 30, (size, size, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def write_classes(folder: Path, per_class: int, seed: int) -> None:
    """folder/<class>/<i>.png for every colour class."""
    for offset, (name, colour) in enumerate(COLOURS.items()):
        for i in range(per_class):
            write_png(folder / name / f"{i}.png", colour, seed + 100 * offset + i)


Runner = Callable[..., subprocess.CompletedProcess[str]]


def run(args: list[str], cwd: Path, runner: Runner = run_cli) -> subprocess.CompletedProcess[str]:
    return runner(args, cwd, env={"CNNLAB_CACHE": str(cwd / "cache")})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose model tells the three colours apart (best.pt and last.pt), trained from memory-mapped
    images (the path of folders too large for memory) through the real CLI."""
    tmp = tmp_path_factory.mktemp("predict")
    write_classes(tmp / "train-images", per_class=12, seed=0)
    result = run(
        [
            "train",
            "experiment=smoke",
            "dataset=imagefolder",
            f"dataset.root={tmp / 'train-images'}",
            "dataset.val_size=6",
            "dataset.source.memory_limit_gb=0",
            "epochs=8",
            "batch_size=8",
            f"hydra.run.dir={tmp / 'run'}",
        ],
        tmp,
    )
    assert result.returncode == 0, result.stderr
    assert "imagefolder: 36 images memory-mapped from the cache" in result.stdout + result.stderr
    return tmp / "run"


def predict(
    ckpt: Path, name: str, *args: str, runner: Runner = run_cli
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`cnnlab predict ckpt=<ckpt> ...` with its output folder under the run's parent (returned)."""
    tmp = ckpt.parent if ckpt.is_dir() else ckpt.parents[2]
    out = tmp / "predictions" / name
    return run(["predict", f"ckpt={ckpt}", *args, f"hydra.run.dir={out}"], tmp, runner), out


def read_csv(out: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out / "predictions.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def check_ranks(row: dict[str, str], k: int) -> None:
    """top1..topK: known classes, probabilities falling and summing to at most 1; top1 is the prediction."""
    probs = [float(row[f"top{rank}_prob"]) for rank in range(1, k + 1)]
    assert all(row[f"top{rank}_class"] in CLASSES for rank in range(1, k + 1))
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    assert (row["predicted"], row["probability"]) == (row["top1_class"], row["top1_prob"])


def test_predict_one_file(trained: Path) -> None:
    image = write_png(trained.parent / "one" / "sample.png", COLOURS["red"], seed=999)
    last = trained / "checkpoints" / "last.pt"  # the final weights: the best ones may come from an early epoch
    result, out = predict(last, "one", f"inputs={image}", "top_k=2")
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(out)
    assert columns == ["path", "predicted", "probability", "top1_class", "top1_prob", "top2_class", "top2_prob"]
    assert len(rows) == 1 and rows[0]["path"] == str(image) and rows[0]["predicted"] == "red"
    check_ranks(rows[0], 2)
    summary = json.loads((out / "predict.json").read_text())
    assert (summary["count"], summary["skipped"], summary["top_k"]) == (1, 0, 2)
    assert (summary["checkpoint"], summary["epoch"]) == (str(last), 8)
    assert "accuracy" not in summary and not (out / "misclassified.png").exists()
    assert "┃ predicted ┃" in result.stdout and "classified 1 image;" in result.stdout


def test_predict_folder_skips_and_counts_an_unreadable_file(trained: Path, cli_in_process: Runner) -> None:
    """Sub-folders that are no classes: unlabelled, searched recursively; top_k is capped at the class count."""
    folder = trained.parent / "photos"
    for i, colour in enumerate(COLOURS.values()):
        write_png(folder / "2024" / "may" / f"{i}.jpg", colour, seed=500 + i)
    write_png(folder / "loose.png", COLOURS["green"], seed=600)
    (folder / "2024" / "broken.png").write_bytes(b"<html>not a png</html>")
    (folder / "notes.txt").write_text("not an image, not counted")
    result, out = predict(trained, "folder", f"inputs={folder}", runner=cli_in_process)
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(out)
    assert "label" not in columns and columns[-2:] == ["top3_class", "top3_prob"]
    assert sorted(Path(row["path"]).name for row in rows) == ["0.jpg", "1.jpg", "2.jpg", "loose.png"]
    for row in rows:
        check_ranks(row, 3)
    summary = json.loads((out / "predict.json").read_text())
    assert (summary["count"], summary["skipped"]) == (4, 1)
    assert summary["checkpoint"] == str(trained / "checkpoints" / "best.pt")  # a run folder: its best weights
    output = result.stdout + result.stderr
    assert "broken.png (not a readable image" in output and "1 of 5 files could not be read" in output


def test_predict_glob(trained: Path, cli_in_process: Runner) -> None:
    folder = trained.parent / "glob"
    write_classes(folder, per_class=2, seed=700)
    result, out = predict(trained, "glob", f"inputs={folder}/**/b*/*.png", "top_k=1", runner=cli_in_process)
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(out)
    assert columns[-2:] == ["top1_class", "top1_prob"]
    assert sorted(row["path"] for row in rows) == [str(folder / "blue" / f"{i}.png") for i in range(2)]


def test_predict_labelled_folder_scores_it(trained: Path, cli_in_process: Runner) -> None:
    """<folder>/test/<class>/...: a label column, accuracy, per-class scores and a gallery of the mistakes."""
    folder = trained.parent / "labelled"
    write_classes(folder / "test", per_class=4, seed=800)
    for i in range(2):  # red images filed as blue: the model should call them red
        write_png(folder / "test" / "blue" / f"wrong{i}.png", COLOURS["red"], seed=900 + i)
    last = trained / "checkpoints" / "last.pt"
    result, out = predict(last, "labelled", f"inputs={folder}", "gallery=4", runner=cli_in_process)
    assert result.returncode == 0, result.stderr
    columns, rows = read_csv(out)
    assert columns[:4] == ["path", "label", "predicted", "probability"] and len(rows) == 14
    assert sorted({row["label"] for row in rows}) == CLASSES
    summary = json.loads((out / "predict.json").read_text())
    correct = sum(row["label"] == row["predicted"] for row in rows)
    assert summary["accuracy"] == pytest.approx(correct / len(rows)) and correct < len(rows)
    assert sorted(summary["per_class"]) == CLASSES
    assert summary["per_class"]["blue"]["images"] == 6
    assert all(0 <= summary["per_class"][c][key] <= 1 for c in CLASSES for key in ("precision", "recall", "f1"))
    assert (out / "misclassified.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "precision" in result.stdout and f"accuracy {summary['accuracy']:.4f}" in result.stdout


def test_predict_on_a_folder_without_images_is_one_line(trained: Path, cli_in_process: Runner) -> None:
    empty = trained.parent / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("x")
    result, out = predict(trained, "empty", f"inputs={empty}", runner=cli_in_process)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: inputs=") and "has no images" in lines[0]


# --- in-process: which folders are labelled, and the scores ------------------------------------------


def test_labelled_folder_layouts(tmp_path: Path) -> None:
    """<folder>/<class>, <folder>/{train,test}/<class>, unlabelled sub-folders, a stray folder, a stray image."""
    write_classes(tmp_path / "flat", per_class=1, seed=0)
    flat = class_folders(tmp_path / "flat", CLASSES)
    assert flat == {tmp_path / "flat" / name: index for index, name in enumerate(CLASSES)}
    write_classes(tmp_path / "split" / "train", per_class=1, seed=0)
    write_classes(tmp_path / "split" / "test", per_class=1, seed=0)
    files = sorted((tmp_path / "split").rglob("*.png"))
    assert true_labels(files, tmp_path / "split", CLASSES) == [0, 1, 2, 0, 1, 2]  # test/ sorts before train/
    write_png(tmp_path / "dates" / "2024" / "a.png", COLOURS["red"], 0)
    assert class_folders(tmp_path / "dates", CLASSES) is None
    write_png(tmp_path / "flat" / "bird" / "a.png", COLOURS["red"], 0)
    with pytest.raises(UserError, match=r"but bird is not a class of the checkpoint \(blue, green, red\)"):
        class_folders(tmp_path / "flat", CLASSES)
    stray = write_png(tmp_path / "split" / "stray.png", COLOURS["red"], 0)
    with pytest.raises(UserError, match=r"not every image is in one \(1 outside, such as .*stray.png\)"):
        true_labels([*files, stray], tmp_path / "split", CLASSES)


def test_precision_recall_f1_from_a_confusion_matrix() -> None:
    confusion = torch.tensor([[3, 1, 0], [0, 2, 0], [1, 0, 0]])  # rows: true, columns: predicted
    scores = precision_recall_f1(confusion)
    assert scores["precision"] == pytest.approx([3 / 4, 2 / 3, 0])
    assert scores["recall"] == pytest.approx([3 / 4, 1, 0])
    assert scores["f1"] == pytest.approx([3 / 4, 0.8, 0])
