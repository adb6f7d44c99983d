"""The numbers behind `cnnlab data`: class counts, image statistics and which images to show.

Only computation lives here; tables are printed by the task and figures drawn in cnnlab.tracking.plots.
"""

from typing import Any

import torch

from cnnlab.data.build import channel_stats
from cnnlab.data.types import ImageSet, SourceData


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels.flatten().cpu(), minlength=num_classes).tolist()


def summarize(source: SourceData) -> dict[str, Any]:
    """Everything overview.json holds; mean/std are of the training pool, which is what training normalises with."""
    classes = source.classes
    splits = {"train": source.train, "test": source.test}
    channels, height, width = source.train.images.shape[1:]
    mean, std = channel_stats(source.train.images)
    return {
        "classes": classes,
        "image_size": [int(height), int(width)],
        "channels": int(channels),
        "total_images": sum(len(data) for data in splits.values() if data is not None),
        "mean": [round(v, 4) for v in mean.tolist()],
        "std": [round(v, 4) for v in std.tolist()],
        **{
            split: None if data is None else {
                "total": len(data), "per_class": dict(zip(classes, class_counts(data.labels, len(classes)))),
            }
            for split, data in splits.items()
        },
    }


def pick_samples(data: ImageSet, num_classes: int, per_class: int, seed: int = 0) -> list[torch.Tensor]:
    """Up to `per_class` images of each class, drawn with a fixed seed so reruns show the same ones."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    labels = data.labels.cpu()[order]
    return [data.images[order[labels == c][:per_class].to(data.images.device)].cpu() for c in range(num_classes)]
