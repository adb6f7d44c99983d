"""metrics.json in the run folder: the run's headline numbers and status, rewritten atomically as they change."""

from pathlib import Path
from typing import Any

from cnnlab.checkpoints.atomic import atomic_json_dump
from cnnlab.tracking.tracker import Sink


class MetricsFileSink(Sink):
    """Keeps metrics.json current, so a crashed run still shows how far it got ("status": "running")."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics: dict[str, Any] = {
            "status": "running", "best_val_acc": None, "test_acc": None, "epochs_completed": 0,
            "train_time_s": 0.0, "params": None, "macs": None, "history": [],
        }

    def _write(self) -> None:
        atomic_json_dump(self.metrics, self.path)

    def run_started(self, info: dict[str, Any]) -> None:
        self.metrics.update(params=info["params"], macs=info["macs"])
        self._write()

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self.metrics["history"].append({"epoch": epoch, **metrics})
        best = self.metrics["best_val_acc"]
        self.metrics.update(
            epochs_completed=epoch,
            best_val_acc=max(best, metrics["val/acc"]) if best is not None else metrics["val/acc"],
            train_time_s=self.metrics["train_time_s"] + metrics["time/epoch_s"],
        )
        self._write()

    def run_ended(self, summary: dict[str, Any]) -> None:
        keys = ("status", "best_val_acc", "test_acc", "test_loss", "epochs_completed", "train_time_s")
        self.metrics.update({k: summary[k] for k in keys if k in summary})
        self._write()
