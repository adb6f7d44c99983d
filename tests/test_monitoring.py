"""What a run folder answers: TensorBoard tags and values, plots, eval reproducing the test accuracy, stop rules."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.config.validate import validate_train_config
from cnnlab.tracking.tracker import norm_scalars
from cnnlab.training.run import prepare_run, run_fit, train
from cnnlab.training.trainer import RunDiverged

from conftest import TINY, run_dirs

PNG = b"\x89PNG\r\n\x1a\n"


def train_in_process(cfg, run_dir: Path) -> dict:
    validate_train_config(cfg)
    train(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def test_tensorboard_holds_the_whole_story(compose_train, tmp_path: Path) -> None:
    metrics = train_in_process(compose_train([*TINY, "trainer.log_graph=true"]), tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0, "images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    scalars = set(tags["scalars"])
    assert {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "lr",
        "throughput/images_per_s",
        "time/epoch_s",
        "test/acc",
        "test/loss",
        "hparam/best_val_acc",
        "hparam/test_acc",
    } <= scalars
    assert {f"test/class_acc/class_{i}" for i in range(10)} <= scalars
    assert {f"test/{kind}/class_0" for kind in ("class_precision", "class_f1")} <= scalars
    layer = next(t.removeprefix("weight_norm/") for t in scalars if t.startswith("weight_norm/"))
    assert f"grad_to_weight/{layer}" in scalars and len(events.Scalars(f"weight_norm/{layer}")) == 2
    assert events.Scalars("test/acc")[0].value == pytest.approx(metrics["test_acc"])
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx([h["val/acc"] for h in metrics["history"]])
    histograms = set(tags["histograms"])
    assert any(t.startswith("weights/") for t in histograms) and any(t.startswith("grad_norm/") for t in histograms)
    assert [e.step for e in events.Histograms(next(t for t in histograms if t.startswith("weights/")))] == [1, 2]
    assert "train/augmented_samples" in tags["images"] and "test/confusion_matrix" in tags["images"]
    assert tags["graph"]
    # the HParams plugin data sits in this run's own event file (no extra sub-run folder)
    assert events.PluginTagToContent("hparams")
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [tmp_path / "checkpoints"]
    for name in ("curves.png", "confusion_matrix.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    for key in ("test_per_class_acc", "test_per_class_precision", "test_per_class_f1"):
        assert set(metrics[key]) == {f"class_{i}" for i in range(10)}


def test_weight_norm_scalars_and_their_ratio_to_the_gradient_norms() -> None:
    weights = {"conv": torch.tensor([3.0, 4.0]), "head": torch.tensor([0.0, 2.0])}
    scalars = norm_scalars(weights, {"conv": torch.tensor([1.0, 3.0])})
    assert scalars == {"weight_norm/conv": 5.0, "grad_to_weight/conv": pytest.approx(0.4), "weight_norm/head": 2.0}


def test_eval_reproduces_the_recorded_test_accuracy(cnnlab_in_process, tmp_path: Path) -> None:
    assert cnnlab_in_process("train", *TINY).returncode == 0
    (run,) = run_dirs(tmp_path / "outputs")
    recorded = json.loads((run / "metrics.json").read_text())
    result = cnnlab_in_process("eval", f"ckpt={run}")
    assert result.returncode == 0, result.stderr
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["acc"] == recorded["test_acc"]
    assert evaluation["split"] == "test" and evaluation["count"] == 100
    assert sum(map(sum, evaluation["confusion"])) == 100
    assert evaluation["per_class_f1"] == pytest.approx(recorded["test_per_class_f1"])
    assert "precision" in result.stdout and "F1" in result.stdout
    assert "confusion matrix" in result.stdout and f"{recorded['test_acc']:.4f}" in result.stdout
    tta = cnnlab_in_process("eval", f"ckpt={run}/checkpoints/best.pt", "split=val", "tta=true")
    assert tta.returncode == 0, tta.stderr
    assert json.loads((run / "eval.json").read_text())["tta"] == "flip"  # true is the older name of flip


def test_the_best_validation_weights_are_tested_and_eval_reproduces_both(
    compose_train, cli_in_process, tmp_path
) -> None:
    """Epoch 1 scores best on validation, the run goes on to epoch 3: test_acc is epoch 1's weights (best.pt),
    test_acc_last the final ones, and `cnnlab eval` of the run folder and of last.pt reproduce each (in this
    process: the test above runs the installed command's eval)."""
    run = prepare_run(compose_train([*TINY, "epochs=3", "lr=0.5", "scheduler=none"]), tmp_path)
    real_evaluate, calls = run.trainer.evaluate, []

    def epoch_one_looks_best(loader, tta=None):
        calls.append(loader)
        return {**real_evaluate(loader, tta), "acc": 0.9 if len(calls) == 1 else 0.1}

    run.trainer.evaluate = epoch_one_looks_best
    run_fit(run, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tested_epoch"] == 1 and metrics["epochs_completed"] == 3
    assert "test_acc_last" in metrics
    for ckpt, recorded in (
        (tmp_path, metrics["test_acc"]),
        (tmp_path / "checkpoints/last.pt", metrics["test_acc_last"]),
    ):
        result = cli_in_process(["eval", f"ckpt={ckpt}"], tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / "eval.json").read_text())["acc"] == recorded


def test_divergence_stops_at_once_with_a_hint(compose_train, tmp_path: Path) -> None:
    cfg = compose_train([*TINY, "lr=1e6", "scheduler=none", "trainer.log_every=1"])
    with pytest.raises(RunDiverged, match="learning rate"):
        train_in_process(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "learning rate" in metrics["message"]
    assert metrics["epochs_completed"] == 0


def test_diverged_run_does_not_stop_a_sweep(cnnlab_in_process, tmp_path: Path) -> None:
    result = cnnlab_in_process("-m", *TINY, "epochs=1", "scheduler=none", "trainer.log_every=1", "lr=1e6,0.1")
    assert result.returncode == 0, result.stderr
    statuses = sorted(json.loads((r / "metrics.json").read_text())["status"] for r in run_dirs(tmp_path / "outputs"))
    assert statuses == ["completed", "diverged"]


def test_early_stopping(compose_train, tmp_path: Path) -> None:
    # lr=1e-9 learns nothing, so validation accuracy never improves after the first epoch
    metrics = train_in_process(compose_train([*TINY, "epochs=6", "lr=1e-9", "trainer.patience=2"]), tmp_path)
    assert metrics["stopped_by"] == "patience" and metrics["epochs_completed"] == 3


def test_time_budget_sets_the_steps_and_the_schedule_anneals_at_its_end(compose_train, tmp_path: Path) -> None:
    import torch

    cfg = compose_train([*TINY, "epochs=1", "trainer.time_budget=4s", "scheduler=linear", "scheduler.end_factor=0.01"])
    metrics = train_in_process(cfg, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert metrics["status"] == "completed" and metrics["time_budget_s"] == 4.0
    assert metrics["epochs_completed"] >= 2  # an epoch here takes well under a second: the budget sets the length
    assert checkpoint["global_step"] == checkpoint["total_steps"] == checkpoint["scheduler"]["total_steps"]
    assert checkpoint["scheduler"]["_last_lr"][0] == pytest.approx(cfg.lr * 0.01)  # annealed on the last step
    assert metrics["train_time_s"] <= 4.0 * 1.03 + max(h["time/epoch_s"] for h in metrics["history"])
