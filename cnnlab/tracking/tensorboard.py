"""TensorBoard (`logger=tensorboard`, the default): the run folder itself is the TensorBoard run, so
`tensorboard --logdir outputs` lists every run.

Steps are epochs. A resumed run writes with `purge_step`, so TensorBoard drops whatever the killed
process logged after its last checkpoint and no step appears twice.
"""

import logging
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from cnnlab.run_folder import RunStatus
from cnnlab.tracking.loggers import RunContext
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import PER_CLASS, Sink, norm_scalars

log = logging.getLogger("cnnlab")


class TensorBoardSink(Sink):
    """Scalars per epoch, weight and gradient-norm histograms, images, confusion matrix and hparams."""

    def __init__(self, context: RunContext) -> None:
        self.writer = SummaryWriter(log_dir=str(context.run_dir), purge_step=context.purge_step)
        self.hparam_values = context.hparams

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        for name, values in weights.items():
            self.writer.add_histogram(f"weights/{name}", values, epoch)
        for name, values in grad_norms.items():
            self.writer.add_histogram(f"grad_norm/{name}", values, epoch)
        for tag, value in norm_scalars(weights, grad_norms).items():
            self.writer.add_scalar(tag, value, epoch)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        """TensorBoard shows grey or RGB: other channel counts are shown as their first three, or the first alone."""
        shown = 3 if images.shape[1] >= 3 else 1
        self.writer.add_images(tag, images[:, :shown], step, dataformats="NCHW")

    def graph(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        try:
            self.writer.add_graph(model, example)
        except Exception as e:  # noqa: BLE001 - tracing is best effort; the run must not fail for a picture
            log.warning("tensorboard: could not trace the model graph (%s)", str(e).splitlines()[0][:160])

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        self.writer.add_scalar(f"{split}/acc", report["acc"], step)
        self.writer.add_scalar(f"{split}/loss", report["loss"], step)
        for key in PER_CLASS:  # test/class_acc/<class>, test/class_precision/<class>, test/class_f1/<class>
            for name, value in zip(classes, report[key]):
                self.writer.add_scalar(f"{split}/{key.replace('per_class_', 'class_')}/{name}", value, step)
        self.writer.add_image(f"{split}/confusion_matrix", confusion.pixels, step, dataformats="HWC")

    def run_ended(self, summary: dict[str, Any]) -> None:
        if summary["status"] in (RunStatus.COMPLETED, RunStatus.DIVERGED):
            metrics = {"hparam/best_val_acc": summary.get("best_val_acc") or 0.0}
            if summary.get("test_acc") is not None:
                metrics["hparam/test_acc"] = summary["test_acc"]
            # written into this run's own folder (add_hparams would make a sub-run), so the HParams tab
            # lines up the runs of a sweep with their scalars
            for event in hparams(self.hparam_values, metrics):
                self.writer.file_writer.add_summary(event)
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, value, summary["epochs_completed"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
