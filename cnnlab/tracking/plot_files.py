"""curves.png and confusion_matrix.png in the run folder, for people who do not open TensorBoard."""

from pathlib import Path
from typing import Any

import torch

from cnnlab.tracking.tracker import Sink


class PlotFilesSink(Sink):
    """Redraws curves.png after every epoch (so a killed run still has it) and the confusion matrix at the end."""

    def __init__(self, run_dir: Path, history: list[dict[str, float]]) -> None:
        self.run_dir = run_dir
        self.history = history

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        from cnnlab.tracking.plots import save_curves  # matplotlib is imported once the first epoch is done

        self.history.append({"epoch": epoch, **metrics})
        save_curves(self.history, self.run_dir / "curves.png")

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int) -> None:
        from cnnlab.tracking.plots import save_confusion_matrix

        save_confusion_matrix(torch.tensor(report["confusion"]), classes, self.run_dir / "confusion_matrix.png")
