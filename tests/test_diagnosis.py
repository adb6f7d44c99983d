"""The learning-curve diagnosis on crafted histories: each rule fires when its pattern is there, and only then."""

import json
from pathlib import Path

from cnnlab.training.diagnosis import diagnose

from conftest import TINY


def epochs(train_loss, val_loss, train_acc, val_acc) -> list[dict[str, float]]:
    return [
        {"epoch": i + 1, "train/loss": tl, "val/loss": vl, "train/acc": ta, "val/acc": va}
        for i, (tl, vl, ta, va) in enumerate(zip(train_loss, val_loss, train_acc, val_acc))
    ]


# a run that learned well and levelled off: nothing to say
HEALTHY = epochs(
    [1.8, 1.0, 0.6, 0.45, 0.42],
    [1.5, 0.9, 0.62, 0.55, 0.54],
    [0.4, 0.7, 0.85, 0.93, 0.94],
    [0.5, 0.7, 0.8, 0.835, 0.832],
)


def only(findings: list[str], start: str) -> None:
    assert len(findings) == 1 and findings[0].startswith(start), findings


def test_a_healthy_run_gets_no_finding() -> None:
    assert diagnose(HEALTHY, "completed") == []
    assert diagnose([], "failed") == []


def test_overfitting_names_the_epoch_validation_loss_turned() -> None:
    history = epochs(
        [1.5, 0.8, 0.4, 0.2, 0.1],
        [1.3, 0.9, 0.8, 0.95, 1.2],
        [0.5, 0.75, 0.9, 0.96, 0.99],
        [0.55, 0.7, 0.74, 0.74, 0.73],
    )
    only(diagnose(history, "completed"), "overfitting since epoch 3: validation loss rose from 0.800 to 1.200")
    flat = epochs([1.5, 0.8, 0.4], [1.3, 0.9, 0.92], [0.5, 0.8, 0.95], [0.55, 0.7, 0.7])  # a 2% rise is noise
    assert not any(f.startswith("overfitting") for f in diagnose(flat))


def test_still_improving_when_the_last_epochs_gain_and_end_best() -> None:
    history = epochs([2.0, 1.5, 1.2, 1.0], [1.9, 1.4, 1.15, 0.95], [0.3, 0.5, 0.6, 0.66], [0.35, 0.5, 0.6, 0.66])
    findings = diagnose(history, "completed")
    assert findings[0].startswith("still improving at the end: validation accuracy rose 16.0 points")
    assert findings[1].startswith("underfitting: training accuracy 66.0% and validation 66.0%")
    peaked = epochs([2.0, 1.5, 1.2, 1.0], [1.9, 1.4, 1.15, 0.95], [0.3, 0.5, 0.95, 0.96], [0.35, 0.5, 0.8, 0.79])
    assert diagnose(peaked) == []


def test_learning_rate_too_high_on_a_spike_or_divergence() -> None:
    spiky = epochs([1.5, 0.9, 2.1, 0.8], [1.3, 0.9, 1.9, 0.8], [0.5, 0.8, 0.4, 0.95], [0.55, 0.93, 0.4, 0.92])
    only(diagnose(spiky), "learning rate likely too high: the training loss jumped from 0.900 to 2.100 at epoch 3")
    only(diagnose(HEALTHY, "diverged"), "learning rate likely too high: the loss diverged")


def test_learning_rate_too_low_when_the_loss_barely_moves() -> None:
    stuck = epochs([2.30, 2.25, 2.20], [2.29, 2.24, 2.21], [0.92, 0.93, 0.93], [0.91, 0.92, 0.915])
    only(diagnose(stuck), "learning rate likely too low: the training loss fell only 4.3% over 3 epochs")
    assert diagnose(stuck[:1]) == []  # one epoch says nothing about the trend


def test_underfitting_needs_a_small_gap() -> None:
    history = epochs([1.2, 1.0, 0.95], [1.1, 0.98, 0.96], [0.6, 0.65, 0.66], [0.62, 0.66, 0.655])
    only(diagnose(history), "underfitting: training accuracy 66.0% and validation 65.5%")
    gap = epochs([1.2, 1.0, 0.95], [1.1, 0.98, 0.96], [0.6, 0.65, 0.8], [0.62, 0.67, 0.66])
    assert diagnose(gap) == []


def test_a_real_run_records_its_diagnosis(cnnlab_in_process, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cnnlab_in_process("train", *TINY, "lr=1e-6", f"hydra.run.dir={run}")  # far too small to move the loss
    assert done.returncode == 0, done.stderr
    diagnosis = json.loads((run / "metrics.json").read_text())["diagnosis"]
    assert any(line.startswith("learning rate likely too low") for line in diagnosis)
    assert "diagnosis: learning rate likely too low" in (run / "train.log").read_text()
