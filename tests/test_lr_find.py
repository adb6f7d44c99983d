"""`cnnlab lr-find`: the range test on synthetic data suggests a learning rate that trains, writes its CSV and plot
into its own folder, and leaves nothing else behind."""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.training.lr_find import RangeTest, range_test
from cnnlab.training.step import TrainStep

from conftest import TINY, run_dirs


def test_range_test_rises_exponentially_and_stops_when_the_loss_blows_up() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = nn.Linear(8, 3)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.2}], lr=0.1)
    step = TrainStep(model, optimizer, nn.CrossEntropyLoss(), device=torch.device("cpu"), amp_dtype=None)
    test = range_test(step, iter(lambda: (images, labels), None), 0.1, 1e-4, 1e4, 100, 0.9, 4.0)
    assert test.lrs[0] == 1e-4 and math.isclose(test.lrs[1] / test.lrs[0], 10 ** (8 / 99), rel_tol=1e-9)
    assert len(test.lrs) < 100  # stopped early: at lr 1e4 the loss explodes
    assert test.smoothed[-1] > 4 * min(test.smoothed)
    assert optimizer.param_groups[1]["lr"] == 2 * optimizer.param_groups[0]["lr"]  # group factors kept
    low = test.min_loss_lr
    assert test.suggestion == low / 3 and test.search_range == (low / 30, low)


def test_suggestion_is_the_minimum_over_three() -> None:
    test = RangeTest(lrs=[1e-3, 1e-2, 1e-1, 1.0], losses=[2.3, 2.0, 1.0, 5.0], smoothed=[2.3, 2.1, 1.5, 3.0])
    assert test.min_loss_lr == 1e-1 and math.isclose(test.suggestion, 1e-1 / 3)


@pytest.mark.slow  # 6 s: a learning-rate range test, then a run at its suggestion (the range test has unit tests)
def test_lr_find_suggests_a_learning_rate_that_trains(cnnlab_in_process, tmp_path: Path) -> None:
    done = cnnlab_in_process("lr-find", *TINY, "lr_find.steps=60", "lr_find.start_lr=1e-4")
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "outputs" / "lr_find").iterdir()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "lr_find.csv",
        "lr_find.log",
        "lr_find.png",
    ]
    with open(folder / "lr_find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"] and 10 <= len(rows) <= 60
    suggested = float(re.search(r"cnnlab train lr=(\S+)", done.stdout + done.stderr).group(1))
    assert 1e-4 < suggested < float(rows[-1]["lr"])
    assert not (tmp_path / "outputs" / "runs").exists()  # no run folder, no checkpoint

    trained = cnnlab_in_process("train", *TINY, f"lr={suggested}", "epochs=3")
    assert trained.returncode == 0, trained.stderr
    (run,) = run_dirs(tmp_path / "outputs" / "runs")
    assert json.loads((run / "metrics.json").read_text())["best_val_acc"] > 0.5  # 10 classes: chance is 0.1
