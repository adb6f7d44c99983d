"""The `logger` group: each logger writes what it promises (read back), several at once, none, a failing one dropped,
and resume continuing the same W&B / MLflow run."""

import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.config.validate import validate_train_config
from cnnlab.errors import UserError
from cnnlab.tracking.csv_file import COLUMNS
from cnnlab.tracking.loggers import RunContext
from cnnlab.tracking.tracker import Sink
from cnnlab.training.run import train

from conftest import TINY, run_dirs


def train_in_process(cfg, run_dir: Path) -> dict:
    validate_train_config(cfg)
    train(cfg, run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_and_tensorboard_at_once_or_no_logger(compose_train, tmp_path: Path) -> None:
    both = tmp_path / "both"
    metrics = train_in_process(compose_train([*TINY, "logger=[tensorboard,csv]"]), both)
    rows = csv_rows(both)
    assert tuple(rows[0]) == COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [float(r["val/acc"]) for r in rows] == pytest.approx([h["val/acc"] for h in metrics["history"]])
    events = EventAccumulator(str(both)).Reload()
    assert [e.value for e in events.Scalars("val/acc")] == pytest.approx([h["val/acc"] for h in metrics["history"]])

    quiet = tmp_path / "none"
    metrics = train_in_process(compose_train([*TINY, "logger=none"]), quiet)
    assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    assert not list(quiet.glob("events.out.tfevents.*")) and not (quiet / "metrics.csv").exists()


class BrokenSink(Sink):
    """A logger whose disk fills up after the first epoch."""

    def __init__(self, context: RunContext) -> None:
        self.epochs = 0

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        raise OSError(28, "No space left on device")

    def run_ended(self, summary: dict[str, Any]) -> None:
        raise AssertionError("a dropped logger gets no more events")


def test_a_failing_logger_is_dropped_with_one_warning_and_the_run_goes_on(
    compose_train, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = [f"+logger.broken._target_={__name__}.BrokenSink", "+logger.broken._partial_=true"]
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        metrics = train_in_process(compose_train([*TINY, "logger=[csv]", *broken]), tmp_path)
    assert metrics["status"] == "completed" and metrics["test_acc"] is not None
    assert len(csv_rows(tmp_path)) == 2
    warnings = [r.getMessage() for r in caplog.records if "logger broken" in r.getMessage()]
    failed = "logger broken failed (OSError: [Errno 28] No space left on device); the run goes on without it"
    assert warnings == [failed]


def test_a_logger_whose_package_is_missing_is_a_one_line_error(
    compose_train, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module, logger in (("wandb", "wandb"), ("mlflow", "mlflow")):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        message = rf"logger={logger} needs {module}, not installed here: pip install"
        cfg = compose_train([*TINY, f"logger={logger}"])
        with pytest.raises(UserError, match=message):  # refused before any data is read
            validate_train_config(cfg)
        with pytest.raises(UserError, match=message):  # and by the logger itself, had validation been skipped
            train(cfg, tmp_path / logger)
    assert validate_train_config(compose_train([*TINY, "logger.tensorboard=null"])) is None  # one logger dropped


@pytest.mark.slow  # 6 s: a run and its resume, a path test_resume.py already covers by default
def test_csv_of_a_resumed_run_has_each_epoch_once(cnnlab_in_process, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = cnnlab_in_process("train", *TINY, "epochs=1", "logger=csv", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr
    second = cnnlab_in_process("train", f"resume={run}", "epochs=2")
    assert second.returncode == 0, second.stderr
    assert [int(r["epoch"]) for r in csv_rows(run)] == [1, 2]


def wandb_records(path: Path) -> list[Any]:
    """The records of a W&B offline run file (`run-<id>.wandb`): a 7-byte header, then LevelDB-log blocks of 32 KiB
    whose records (4-byte checksum, 2-byte length, 1-byte kind: 1 whole, 2 first, 3 middle, 4 last) hold protobufs."""
    from wandb.proto import wandb_internal_pb2

    block, header = 32768, 7
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, records, pending = header, [], b""
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a record header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        pending += data[position + header : position + header + length]
        position += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_values(records: list[Any], kind: str) -> list[dict[str, Any]]:
    """The key/value items of every `history` or `summary` record, JSON-decoded."""
    items = [r.history.item if kind == "history" else r.summary.update for r in records if r.HasField(kind)]
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in each} for each in items]


@pytest.mark.slow  # 35 s: a run stopped and resumed with wandb
def test_wandb_offline_run_is_written_and_resume_continues_it(run_cnnlab, tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    run = tmp_path / "run"
    first = run_cnnlab("train", *TINY, "epochs=1", "logger=wandb", f"hydra.run.dir={run}", env=env)
    assert first.returncode == 0, first.stderr
    identity = json.loads((run / "wandb_run.json").read_text())
    run_id = identity["id"]
    second = run_cnnlab("train", f"resume={run}", "epochs=2", env=env)
    assert second.returncode == 0, second.stderr
    assert "logger wandb" not in first.stderr + second.stderr  # no warning: it started and stayed
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # one per process, the same W&B run
    records = [wandb_records(folder / f"run-{run_id}.wandb") for folder in offline]
    assert all(next(r.run for r in rs if r.HasField("run")).display_name == "run" for rs in records)
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = [h for rs in records for h in wandb_values(rs, "history") if "val/acc" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    assert [h["val/acc"] for h in epochs] == pytest.approx([h["val/acc"] for h in metrics["history"]])
    summary = {k: v for update in wandb_values(records[-1], "summary") for k, v in update.items()}
    assert summary["status"] == "completed" and summary["best_val_acc"] == pytest.approx(metrics["best_val_acc"])
    assert summary["test/acc"] == pytest.approx(metrics["test_acc"])
    artifacts = [r.artifact for r in records[-1] if r.HasField("artifact")]
    assert [(a.name, a.type) for a in artifacts] == [(f"model-{run_id}", "model")]


@pytest.mark.slow  # 50 s: a sweep, then a trial resumed, with mlflow
def test_mlflow_sweep_is_a_parent_run_and_resume_continues_a_trial(run_cnnlab, tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "artifacts"
    logger = ["logger=mlflow", f"logger.mlflow.tracking_uri={uri}", f"logger.mlflow.artifact_location={artifacts}"]
    sweep = tmp_path / "sweep"
    done = run_cnnlab("-m", *TINY, "epochs=1", *logger, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cnnlab")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = next(r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert {c.data.params["seed"] for c in children} == {"0", "1"}
    assert all(r.info.status == "FINISHED" for r in runs.values())  # the parent ends with the sweep

    trial = run_dirs(sweep)[0]
    resumed = run_cnnlab("train", f"resume={trial}", "epochs=2", *logger)
    assert resumed.returncode == 0, resumed.stderr
    run_id = (trial / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(run_id, "val/acc")
    metrics = json.loads((trial / "metrics.json").read_text())
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([h["val/acc"] for h in metrics["history"]])
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "step/loss")) >= 2
    artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= artifacts
    assert any(a.path.endswith("confusion_matrix.png") for a in client.list_artifacts(run_id))
