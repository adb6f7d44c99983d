"""Accuracy, per-class accuracy, precision, recall, F1 and confusion matrix of a split.

Counted with torch.bincount: importing torchmetrics for these numbers cost 2-3 s at the start of
every run (every trial of a search), more than a short trial trains.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

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


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Plain numbers and lists (JSON- and checkpoint-friendly): acc, loss, per_class_acc, confusion[true][pred]."""
    preds = logits.argmax(1)
    confusion = confusion_matrix(preds, labels, num_classes)
    return {
        "acc": (preds == labels).double().mean().item(),
        "loss": nn.functional.cross_entropy(logits.float(), labels).item(),
        "per_class_acc": precision_recall_f1(confusion)["recall"],  # a class's accuracy is its recall
        "confusion": confusion.tolist(),
        "count": int(labels.numel()),
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    amp_dtype: torch.dtype | None = None,
    flip_tta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels over a whole split in eval mode; flip_tta averages with mirrored images."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        with autocast(images.device, amp_dtype):
            logits = model(images).float()
            if flip_tta:
                logits = (logits + model(images.flip(3)).float()) / 2
        all_logits.append(logits)
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)
