"""TensorBoard: the run folder itself is the TensorBoard run, so `tensorboard --logdir outputs` lists every run."""

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from cnnlab.tracking.tracker import Sink


class TensorBoardSink(Sink):
    """Per-epoch scalars (x axis: epoch) and the final test accuracy."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = SummaryWriter(log_dir=str(run_dir))

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def run_ended(self, summary: dict[str, Any]) -> None:
        if summary.get("test_acc") is not None:
            self.writer.add_scalar("test/acc", summary["test_acc"], summary["epochs_completed"])
            self.writer.add_scalar("test/loss", summary["test_loss"], summary["epochs_completed"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
