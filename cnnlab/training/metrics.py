"""Accuracy, per-class accuracy, precision, recall, F1 and confusion matrix of a split, and the predictions
(with test-time augmentation) they are counted from.

Counted with torch.bincount: importing torchmetrics for these numbers cost 2-3 s at the start of
every run (every trial of a search), more than a short trial trains.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.config.choices import tta_level
from cnnlab.data.augment import translate
from cnnlab.device import autocast


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts as [true][predicted] (int64)."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall_f1(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Per class, from a [true][predicted] confusion matrix; 0 where a class was never predicted or never present."""
    counts = confusion.double()
    hits = counts.diagonal()
    precision = hits / counts.sum(0).clamp(min=1)
    recall = hits / counts.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist()}


def report_counts(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """What a classification report is computed from, as one float64 vector that adds up over the shards of a
    split (a data-parallel run sums it across processes): the confusion matrix, then the summed cross-entropy."""
    confusion = confusion_matrix(logits.argmax(1), labels, num_classes).double().flatten()
    loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum").double().reshape(1)
    return torch.cat([confusion, loss])


def report_from_counts(counts: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Plain numbers and lists (JSON- and checkpoint-friendly): acc, loss, per-class accuracy (recall), precision
    and F1, confusion[true][pred], from `report_counts` (summed over shards)."""
    counts = counts.double().cpu()
    confusion = counts[:-1].round().long().reshape(num_classes, num_classes)
    count = int(confusion.sum())
    scores = precision_recall_f1(confusion)
    return {
        "acc": confusion.diagonal().sum().item() / max(count, 1),
        "loss": counts[-1].item() / max(count, 1),
        "per_class_acc": scores["recall"],  # a class's accuracy is its recall
        "per_class_precision": scores["precision"],
        "per_class_f1": scores["f1"],
        "confusion": confusion.tolist(),
        "count": count,
    }


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """The report of one process's predictions (see report_from_counts)."""
    return report_from_counts(report_counts(logits, labels, num_classes), num_classes)


@dataclass(frozen=True)
class View:
    """One copy of a batch that test-time augmentation predicts on, and the weight of its logits in the average."""

    weight: float
    mirror: bool = False
    shift: tuple[int, int] = (0, 0)  # (rows down, columns right) the view's window moves; the border is reflected


# flip_translate: the image and its mirror, each also shifted one pixel up-left and one down-right (the
# multi-crop TTA of the fast CIFAR-10 recipes). The unshifted pair keeps half the weight, as in those recipes:
# it shows every real pixel, while each shifted pair replaces a border row and column by a reflection.
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (View(1.0),),
    "flip": (View(0.5), View(0.5, mirror=True)),
    "flip_translate": (
        View(0.25),
        View(0.25, mirror=True),
        View(0.125, shift=(-1, -1)),
        View(0.125, mirror=True, shift=(-1, -1)),
        View(0.125, shift=(1, 1)),
        View(0.125, mirror=True, shift=(1, 1)),
    ),
}


def tta_views(tta: bool | str) -> tuple[View, ...]:
    """The views a TTA level (or the older true/false) predicts on; their count is the forwards per image."""
    return TTA_VIEWS[tta_level(tta)]


def view_of(images: torch.Tensor, view: View) -> torch.Tensor:
    """The batch as `view` shows it: mirrored first, then shifted."""
    shown = images.flip(3) if view.mirror else images
    return translate(shown, *view.shift) if view.shift != (0, 0) else shown


def tta_logits(model: nn.Module, images: torch.Tensor, views: tuple[View, ...]) -> torch.Tensor:
    """The weighted mean of the model's float32 logits over the views (one forward per view)."""
    return sum(view.weight * model(view_of(images, view)).float() for view in views)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp_dtype: torch.dtype | None = None,
    tta: bool | str = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels over a whole split in eval mode, averaged over the views of TTA level `tta`."""
    views = tta_views(tta)
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with autocast(images.device, amp_dtype):
            all_logits.append(tta_logits(model, images, views))
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)
