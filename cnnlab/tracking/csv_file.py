"""metrics.csv in the run folder (`logger=csv`): one row per epoch, for spreadsheets and pandas.

The columns are the epoch, then the metrics the training loop records every epoch, in a fixed order, so every
run of a sweep has the same header and the files concatenate. A resumed run rewrites the file from its
checkpoint's history, so an epoch a killed process logged after its last checkpoint appears once.
"""

import csv
import io
from pathlib import Path
from typing import Any

from cnnlab.atomic import atomic_bytes_write
from cnnlab.tracking.loggers import RunContext
from cnnlab.tracking.tracker import Sink

FILENAME = "metrics.csv"
# What the training loop records every epoch
COLUMNS = (
    "epoch",
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "lr",
    "throughput/images_per_s",
    "time/epoch_s",
)


class CsvSink(Sink):
    """Rewrites metrics.csv atomically after every epoch (a few hundred bytes per epoch: cheap, never torn)."""

    def __init__(self, context: RunContext) -> None:
        self.path = context.run_dir / FILENAME
        self.rows: list[dict[str, Any]] = [{k: row.get(k) for k in COLUMNS} for row in context.history]

    def run_started(self, info: dict[str, Any]) -> None:
        if self.rows:  # a resumed run: drop at once the rows a killed process wrote after its last checkpoint
            write_rows(self.path, self.rows)

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {"epoch": epoch, **metrics}
        self.rows.append({k: row.get(k) for k in COLUMNS})
        write_rows(self.path, self.rows)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_bytes_write(text.getvalue().encode(), path)
