"""MLflow (`logger=mlflow`, the `mlflow` extra): each run an MLflow run, a search a parent run with its trials as
children.

The tracking URI defaults to a SQLite database beside the runs (`outputs/mlflow.db`), a real store, so
`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db` lists every run. The MLflow run id is kept in the run
folder, so `resume=<run>` continues the same MLflow run. Epoch metrics are logged at step = epoch, the per-step
running means (`step/*`) at the optimizer step.
"""

import re
import time
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from cnnlab.run_folder import RunStatus, checkpoints_dir
from cnnlab.tracking.loggers import RunContext, SweepInfo, require_extra, resumed_record
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import PER_CLASS, Sink, norm_scalars

ID_FILE = "mlflow_run_id"  # in the run folder
PARENT_ID_FILE = "mlflow_parent_run_id"  # in the sweep folder
SETUP_LOCK = ".mlflow.lock"  # held while the first trial of a search creates the store, experiment or parent run
SETUP_TIMEOUT_S = 120
MAX_PARAMS = 100  # per log_batch call (MLflow's limits)
MAX_METRICS = 1000
MAX_PARAM_CHARS = 6000
# How each cnnlab status ends the MLflow run
END_STATES = {
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.PRUNED: "FINISHED",
    RunStatus.INTERRUPTED: "KILLED",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The config as MLflow params: dotted keys, values as text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_CHARS]
    return out


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: a class folder's name may hold characters it refuses (they become _)."""
    return re.sub(r"[^\w./\- :]", "_", name)


def store_folder(tracking_uri: str) -> Path:
    """Where the setup lock lives: the SQLite file's folder, or the current folder for any other store."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return Path.cwd()


class MlflowSink(Sink):
    """Params from the config, metrics per epoch and per log step, the confusion matrix and checkpoints as
    artifacts; the run ends FINISHED, FAILED or KILLED (an interrupted run, which `resume=` reopens)."""

    def __init__(
        self,
        context: RunContext,
        tracking_uri: str = "sqlite:///outputs/mlflow.db",
        experiment: str = "cnnlab",
        artifact_location: str | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        mlflow = require_extra("mlflow", "mlflow", "mlflow")
        self.entities = mlflow.entities
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.run_dir = context.run_dir
        self.log_checkpoints = log_checkpoints
        self.ended = False
        with FileLock(store_folder(tracking_uri) / SETUP_LOCK, timeout=SETUP_TIMEOUT_S):
            experiment_id = self._experiment(experiment, artifact_location)
            if resumed_id := resumed_record(context, ID_FILE):
                self.run_id = resumed_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
            tags = {"cnnlab.run_dir": str(context.run_dir.resolve())}
            if context.sweep is not None:
                tags["mlflow.parentRunId"] = self._parent(experiment_id, context.sweep)
            run = self.client.create_run(experiment_id, run_name=context.name, tags=tags)
            self.run_id = run.info.run_id
            (context.run_dir / ID_FILE).write_text(self.run_id + "\n")
        params = [self.entities.Param(k, v) for k, v in flat(context.config).items()]
        for start in range(0, len(params), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=params[start : start + MAX_PARAMS])

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = Path(artifact_location).resolve().as_uri() if artifact_location else None
        return self.client.create_experiment(name, artifact_location=location)

    def _parent(self, experiment_id: str, sweep: SweepInfo) -> str:
        """The search's parent run, created by its first trial (the setup lock keeps it to one)."""
        path = sweep.folder / PARENT_ID_FILE
        if path.is_file():
            return path.read_text().strip()
        run = self.client.create_run(
            experiment_id, run_name=sweep.name, tags={"cnnlab.sweep_dir": str(sweep.folder.resolve())}
        )
        sweep.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(run.info.run_id + "\n")
        return run.info.run_id

    def _metrics(self, values: dict[str, float], step: int) -> None:
        stamp = now_ms()
        metrics = [self.entities.Metric(metric_key(k), float(v), stamp, step) for k, v in values.items()]
        for start in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS])

    def step(self, step: int, stats: dict[str, float]) -> None:
        values = {f"step/{k}": v for k, v in stats.items() if k != "global_step"}
        self._metrics(values, int(stats["global_step"]))

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self._metrics(metrics, epoch)

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        self._metrics(norm_scalars(weights, grad_norms), epoch)

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        values = {f"{split}/acc": report["acc"], f"{split}/loss": report["loss"]}
        for key in PER_CLASS:
            tag = key.replace("per_class_", "class_")
            values.update({f"{split}/{tag}/{name}": v for name, v in zip(classes, report[key])})
        self._metrics(values, step)
        self.client.log_image(self.run_id, confusion.pixels, f"{split}_confusion_matrix.png")

    def run_ended(self, summary: dict[str, Any]) -> None:
        folder = checkpoints_dir(self.run_dir)
        if self.log_checkpoints and folder.is_dir():
            for path in sorted(folder.glob("*.pt")):
                self.client.log_artifact(self.run_id, str(path), "checkpoints")
        tags = [self.entities.RunTag("cnnlab.status", str(summary["status"]))]
        self.client.log_batch(self.run_id, tags=tags)
        self._end(END_STATES.get(summary["status"], "FAILED"))

    def _end(self, state: str) -> None:
        if not self.ended:
            self.ended = True
            self.client.set_terminated(self.run_id, status=state)

    def close(self) -> None:
        self._end("FAILED")  # only reached unended when the run stopped without ending (an error)


def end_parent_run(sweep_dir: Path, tracking_uri: str) -> None:
    """Mark a search's parent run FINISHED once the search ends (its trials ended themselves)."""
    mlflow = require_extra("mlflow", "mlflow", "mlflow")
    run_id = (sweep_dir / PARENT_ID_FILE).read_text().strip()
    mlflow.MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status="FINISHED")
