"""The metrics sink interface the Trainer talks to, and the Tracker that fans events out to sinks."""

from collections.abc import Callable, Sequence
from typing import Any

import torch

from cnnlab.tracking.picture import Picture

# The per-class lists of a classification report (accuracy is the class's recall), in the order tables show them
PER_CLASS = ("per_class_acc", "per_class_precision", "per_class_f1")


def norm_scalars(weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per layer: the weight norm (`weight_norm/<layer>`) and, where gradients were seen, the epoch's mean gradient
    norm over it (`grad_to_weight/<layer>`): how far a step moves the layer relative to its size. A layer whose
    ratio sits orders of magnitude below the others barely learns; one far above is unstable."""
    scalars: dict[str, float] = {}
    for name, values in weights.items():
        norm = values.float().norm().item()
        scalars[f"weight_norm/{name}"] = norm
        if name in grad_norms and grad_norms[name].numel():
            scalars[f"grad_to_weight/{name}"] = grad_norms[name].float().mean().item() / max(norm, 1e-12)
    return scalars


class Sink:
    """Receives training events; every hook is optional (the defaults do nothing)."""

    def run_started(self, info: dict[str, Any]) -> None: ...

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self, step: int, stats: dict[str, float]) -> None: ...

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        """Per-layer weights and the gradient norms seen during the epoch, for distributions."""

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        """A batch of NCHW float images in [0, 1], shown as a grid."""

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        """A split's final accuracy, per-class accuracy and confusion matrix (`confusion`, drawn once for all sinks)."""

    def graph(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        """The model's graph, traced on an example batch."""

    def run_ended(self, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class Tracker(Sink):
    """Forwards each event to every sink, in order."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def run_started(self, info: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.run_started(info)

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        for sink in self.sinks:
            sink.epoch_started(epoch, epochs, steps)

    def step(self, step: int, stats: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.step(step, stats)

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.epoch_ended(epoch, metrics)

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        for sink in self.sinks:
            sink.tensors(epoch, weights, grad_norms)

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        for sink in self.sinks:
            sink.images(tag, images, step)

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        for sink in self.sinks:
            sink.evaluation(split, report, classes, step, confusion)

    def graph(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        for sink in self.sinks:
            sink.graph(model, example)

    def run_ended(self, summary: dict[str, Any]) -> None:
        self._every_sink(lambda sink: sink.run_ended(summary))

    def close(self) -> None:
        self._every_sink(lambda sink: sink.close())

    def _every_sink(self, call: Callable[[Sink], None]) -> None:
        """Call every sink even if one fails (a full disk stops TensorBoard, metrics.json may still fit), then raise."""
        first: Exception | None = None
        for sink in self.sinks:
            try:
                call(sink)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other sinks had their turn
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
