"""metrics.json in the run folder: the run's headline numbers and status, rewritten atomically as they change."""

import json
import time
from pathlib import Path
from typing import Any

from cnnlab.checkpoints.atomic import atomic_json_dump
from cnnlab.tracking.tracker import Sink

SUMMARY_KEYS = (
    "status", "best_val_acc", "test_acc", "test_loss", "epochs_completed", "train_time_s", "stopped_by", "message",
    "pruned_at_epoch", "latency_ms",
)


class MetricsFileSink(Sink):
    """Keeps metrics.json current, so a crashed run still shows how far it got ("status": "running").

    On resume it continues the file: history up to the checkpoint's epoch is kept, later entries
    (written by the killed process after its last checkpoint) are dropped.
    """

    def __init__(self, path: Path, resume_epoch: int | None = None) -> None:
        self.path = path
        self.metrics: dict[str, Any] = {
            "status": "running", "best_val_acc": None, "test_acc": None, "epochs_completed": 0,
            "train_time_s": 0.0, "params": None, "macs": None, "history": [],
        }
        if resume_epoch is not None and path.is_file():
            previous = json.loads(path.read_text())
            history = [h for h in previous.get("history", []) if h["epoch"] <= resume_epoch]
            self.metrics.update(history=history, epochs_completed=resume_epoch)
            if "started_at" in previous:
                self.metrics["started_at"] = previous["started_at"]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch metrics so far (on resume: those up to the checkpoint)."""
        return self.metrics["history"]

    def _write(self) -> None:
        atomic_json_dump(self.metrics, self.path)

    def run_started(self, info: dict[str, Any]) -> None:
        self.metrics.update(status="running", params=info["params"], macs=info["macs"], device=info["device"],
                            threads=info["threads"])
        self.metrics.setdefault("started_at", time.time())  # a resumed run keeps its first start
        self._write()

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        # seconds since training first started: the x axis of a time-to-accuracy curve
        elapsed = time.time() - self.metrics.get("started_at", time.time())
        self.metrics["history"].append({"epoch": epoch, **metrics, "time/elapsed_s": elapsed})
        accs = [h["val/acc"] for h in self.metrics["history"]]
        self.metrics.update(
            epochs_completed=epoch, best_val_acc=max(accs),
            train_time_s=sum(h["time/epoch_s"] for h in self.metrics["history"]),
        )
        self._write()

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int) -> None:
        self.metrics[f"{split}_per_class_acc"] = dict(zip(classes, report["per_class_acc"]))
        self._write()

    def run_ended(self, summary: dict[str, Any]) -> None:
        self.metrics.update({k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None})
        self.metrics["ended_at"] = time.time()
        self._write()
