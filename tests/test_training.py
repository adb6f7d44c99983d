"""Training in-process on tiny synthetic data: it learns, writes its files, and the same seed gives the same numbers."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from cnnlab.config.validate import validate_train_config
from cnnlab.training.run import train

from conftest import TINY


def run(cfg: DictConfig, run_dir: Path) -> tuple[float, dict]:
    validate_train_config(cfg)
    best = train(cfg, run_dir)
    return best, json.loads((run_dir / "metrics.json").read_text())


def test_same_seed_same_numbers_different_seed_differs(compose_train, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # CPU reductions are deterministic for a fixed thread count
    first = run(compose_train(TINY), tmp_path / "a")
    second = run(compose_train(TINY), tmp_path / "b")
    other = run(compose_train([*TINY, "seed=1"]), tmp_path / "c")

    def drop_times(metrics: dict) -> list[dict]:
        return [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in metrics["history"]]

    assert drop_times(first[1]) == drop_times(second[1])
    assert first[1]["test_acc"] == second[1]["test_acc"]
    weights_a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)["model"]
    weights_b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert drop_times(other[1]) != drop_times(first[1])


def test_each_model_and_optimizer_learns(compose_train, tmp_path: Path) -> None:
    for overrides in (
        ["model=mlp", "optimizer=adam", "lr=0.003"],
        ["model=simple_cnn", "optimizer=adamw", "lr=0.003"],
        ["optimizer=rmsprop", "lr=0.002", "scheduler=cosine"],
    ):
        best, metrics = run(compose_train([*TINY, *overrides]), tmp_path / overrides[0])
        assert metrics["status"] == "completed"
        assert best == metrics["best_val_acc"] > 0.3, (overrides, best)  # chance is 0.1


def test_classification_report_counts_confusion_and_per_class_accuracy() -> None:
    from cnnlab.training.metrics import classification_report

    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 0])
    report = classification_report(torch.nn.functional.one_hot(preds, 4).float(), labels, 4)
    assert report["confusion"] == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert report["per_class_acc"] == [0.5, 2 / 3, 0.0, 0.0]  # class 3 has no images: 0
    assert report["per_class_precision"] == [1 / 3, 2 / 3, 0.0, 0.0]  # class 0: predicted 3 times, right once
    assert report["per_class_f1"] == pytest.approx([0.4, 2 / 3, 0.0, 0.0])
    assert report["acc"] == 0.5 and report["count"] == 6
