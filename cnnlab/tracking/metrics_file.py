"""metrics.json in the run folder: the run's headline numbers and status, rewritten atomically as they change."""

import time
from pathlib import Path
from typing import Any

from cnnlab.run_folder import RunStatus, write_metrics
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import PER_CLASS, Sink

SUMMARY_KEYS = (
    "status",
    "best_val_acc",
    "test_acc",
    "test_loss",
    "test_acc_last",
    "tested_epoch",
    "epochs_completed",
    "train_time_s",
    "time_budget_s",
    "stopped_by",
    "message",
    "pruned_at_epoch",
    "latency_ms",
    "diagnosis",
)


class MetricsFileSink(Sink):
    """Keeps metrics.json current, so a crashed run still shows how far it got (status RUNNING).

    A resumed run continues the file from its checkpoint: `history` holds the epochs up to it (those a
    killed process wrote after its last checkpoint are gone), `started_at` the run's first start.
    """

    def __init__(
        self,
        run_dir: Path,
        history: list[dict[str, Any]] | None = None,
        started_at: float | None = None,
        epochs_completed: int = 0,
    ) -> None:
        self.run_dir = run_dir
        self.metrics: dict[str, Any] = {
            "status": RunStatus.RUNNING,
            "best_val_acc": None,
            "test_acc": None,
            "epochs_completed": epochs_completed,
            "train_time_s": 0.0,
            "params": None,
            "macs": None,
            "history": list(history or []),
        }
        if started_at is not None:
            self.metrics["started_at"] = started_at

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch metrics so far (on resume: those up to the checkpoint)."""
        return self.metrics["history"]

    def _write(self) -> None:
        write_metrics(self.run_dir, self.metrics)

    def run_started(self, info: dict[str, Any]) -> None:
        self.metrics.update(
            status=RunStatus.RUNNING,
            params=info["params"],
            macs=info["macs"],
            device=info["device"],
            threads=info["threads"],
            processes=info.get("processes", 1),
            train_size=info["train_size"],
            val_size=info["val_size"],
            test_size=info["test_size"],
        )
        self.metrics.setdefault("started_at", time.time())  # a resumed run keeps its first start
        self._write()

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        # seconds since training first started: the x axis of a time-to-accuracy curve
        elapsed = time.time() - self.metrics.get("started_at", time.time())
        self.metrics["history"].append({"epoch": epoch, **metrics, "time/elapsed_s": elapsed})
        accs = [h["val/acc"] for h in self.metrics["history"]]
        self.metrics.update(
            epochs_completed=epoch,
            best_val_acc=max(accs),
            train_time_s=sum(h["time/epoch_s"] for h in self.metrics["history"]),
        )
        self._write()

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        for key in PER_CLASS:
            self.metrics[f"{split}_{key}"] = dict(zip(classes, report[key]))
        self._write()

    def run_ended(self, summary: dict[str, Any]) -> None:
        self.metrics.update({k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None})
        self.metrics["ended_at"] = time.time()
        self._write()
