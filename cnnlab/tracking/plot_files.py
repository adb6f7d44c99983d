"""curves.png and confusion_matrix.png in the run folder, for people who do not open TensorBoard."""

import time
from pathlib import Path
from typing import Any

from cnnlab.atomic import atomic_bytes_write
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import Sink


class PlotFilesSink(Sink):
    """Draws curves.png when the run ends and, during it, at most every `redraw_every_s` (so a killed run
    keeps a recent one); drawing costs about half a second, too much to repeat after every short epoch
    of a search. The confusion matrix is drawn once, at the end."""

    def __init__(self, run_dir: Path, history: list[dict[str, float]], redraw_every_s: float = 30.0) -> None:
        self.run_dir = run_dir
        self.history = history
        self.redraw_every_s = redraw_every_s
        self.last_draw = time.monotonic()
        self.drawn_epochs = len(history)

    def _draw_curves(self) -> None:
        from cnnlab.tracking.plots import save_curves  # matplotlib is imported only when something is drawn

        save_curves(self.history, self.run_dir / "curves.png")
        self.last_draw, self.drawn_epochs = time.monotonic(), len(self.history)

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self.history.append({"epoch": epoch, **metrics})
        if time.monotonic() - self.last_draw >= self.redraw_every_s:
            self._draw_curves()

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        atomic_bytes_write(confusion.png, self.run_dir / "confusion_matrix.png")

    def run_ended(self, summary: dict[str, Any]) -> None:
        if self.history and len(self.history) != self.drawn_epochs:
            self._draw_curves()
