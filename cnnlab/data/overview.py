"""`cnnlab data`: class counts, image statistics and sample images of a data set, before any training.

The numbers are computed here; tables are printed by cnnlab.tracking.terminal and figures drawn by
cnnlab.tracking.plots.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.atomic import atomic_json_dump
from cnnlab.data.statistics import channel_stats
from cnnlab.data.types import ImageSet, SourceData

log = logging.getLogger("cnnlab")


def class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels.flatten().cpu(), minlength=num_classes).tolist()


def summarize(source: SourceData) -> dict[str, Any]:
    """Everything overview.json holds; mean/std are of the training pool, which is what training normalises with."""
    classes = source.classes
    splits = {"train": source.train, "test": source.test}
    channels, height, width = source.train.images.shape[1:]
    mean, std = channel_stats(source.train)
    return {
        "classes": classes,
        "image_size": [int(height), int(width)],
        "channels": int(channels),
        "total_images": sum(len(data) for data in splits.values() if data is not None),
        "mean": [round(v, 4) for v in mean.tolist()],
        "std": [round(v, 4) for v in std.tolist()],
        **{
            split: None
            if data is None
            else {
                "total": len(data),
                "per_class": dict(zip(classes, class_counts(data.labels, len(classes)))),
            }
            for split, data in splits.items()
        },
    }


def pick_samples(data: ImageSet, num_classes: int, per_class: int, seed: int = 0) -> list[torch.Tensor]:
    """Up to `per_class` images of each class, drawn with a fixed seed so reruns show the same ones."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    labels = data.labels.cpu()[order]
    return [data.gather(order[labels == c][:per_class]).cpu() for c in range(num_classes)]


def write_overview(dataset: DictConfig, samples_per_class: int, run_dir: Path) -> dict[str, Any]:
    """Print the overview tables; write overview.json, samples.png and class_distribution.png into `run_dir`."""
    from cnnlab.tracking.plots import save_class_distribution, save_samples
    from cnnlab.tracking.terminal import print_overview

    source = instantiate(dataset.source)
    summary = summarize(source)
    print_overview(dataset.name, summary)
    classes = summary["classes"]
    splits = {s: list(summary[s]["per_class"].values()) for s in ("train", "test") if summary[s] is not None}
    save_samples(
        pick_samples(source.train, len(classes), samples_per_class), classes, samples_per_class, run_dir / "samples.png"
    )
    save_class_distribution(splits, classes, run_dir / "class_distribution.png")
    atomic_json_dump({"dataset": dataset.name, **summary}, run_dir / "overview.json")
    log.info("overview.json, samples.png and class_distribution.png are in %s", run_dir)
    return summary
