"""From the dataset config to ready loaders: load the source, hold out validation, compute statistics."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.data.augment import BatchAugment
from cnnlab.data.loader import BatchLoader
from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError


@dataclass
class DataBundle:
    train: BatchLoader
    val: BatchLoader
    test: BatchLoader | None
    classes: list[str]
    input_shape: tuple[int, int, int]  # channels, height, width

    def card(self) -> dict[str, Any]:
        """What a checkpoint carries so that it alone rebuilds the model and its input pipeline, without the data."""
        return {
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "mean": self.train.mean.flatten().tolist(),
            "std": self.train.std.flatten().tolist(),
        }


def holdout_count(total: int, val_size: int | float) -> int:
    count = int(round(total * val_size)) if isinstance(val_size, float) else int(val_size)
    if not 0 < count < total:
        raise UserError(
            f"dataset.val_size={val_size} leaves no {'validation' if count <= 0 else 'training'} images "
            f"out of {total}; use a count between 1 and {total - 1} or a fraction such as 0.1"
        )
    return count


def split_holdout(data: ImageSet, val_size: int | float, split_seed: int) -> tuple[ImageSet, ImageSet]:
    """Split off a seeded validation set; it depends only on split_seed, never on the run's seed."""
    count = holdout_count(len(data), val_size)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(split_seed))
    return data.subset(order[:-count]), data.subset(order[-count:])


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunks to bound memory."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in images.split(chunk):
        x = part.to(torch.float64).cpu() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def chosen_classes(names: object, available: list[str]) -> list[str]:
    """`dataset.classes`: names of the data set's classes (or their indices), each once."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise UserError(f"dataset.classes={names!r} is invalid: give a list of class names, e.g. [cat,dog]")
    chosen = [available[n] if isinstance(n, int) and 0 <= n < len(available) else str(n) for n in names]
    unknown = [n for n in chosen if n not in available]
    if unknown or len(set(chosen)) != len(chosen):
        problem = f"{unknown[0]!r} is not one of its classes" if unknown else "a class is listed twice"
        raise UserError(f"dataset.classes: {problem}; choose from {', '.join(available)}")
    return chosen


def check_learnable(source: SourceData, cfg: DictConfig) -> None:
    """Data a classifier can learn from: two classes with training images, and crops smaller than the images."""
    present = torch.unique(source.train.labels).tolist()
    if len(source.classes) < 2 or len(present) < 2:
        names = ", ".join(source.classes[i] for i in present) or "none"
        raise UserError(
            f"dataset {cfg.name}: only {len(present)} class has training images ({names}); a classifier needs at "
            "least 2: add a folder of images per class (dataset.root), or check why the others' images were skipped"
        )
    padding, height, width = cfg.augment.crop_padding, *source.train.images.shape[-2:]
    if padding > min(height, width) // 2:
        raise UserError(
            f"dataset.augment.crop_padding={padding} is invalid: the images are {height}x{width}, so pad at most "
            f"{min(height, width) // 2} pixels (4 is usual for 32x32)"
        )


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def input_statistics(normalization: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`data`: the training split's own per-channel mean/std; `imagenet`: the statistics ImageNet-pretrained
    backbones were trained with (their first layers expect inputs normalised that way)."""
    if normalization == "data":
        return channel_stats(images)
    if images.shape[1] != 3:
        raise UserError(
            f"dataset.normalization=imagenet needs RGB images, these have {images.shape[1]} channel(s); "
            "use dataset.normalization=data or dataset.source.channels=3"
        )
    return torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)


def build_data(
    cfg: DictConfig, batch_size: int, eval_batch_size: int, device: torch.device, seed: int, channels_last: bool
) -> DataBundle:
    source: SourceData = instantiate(cfg.source)
    if cfg.get("classes") is not None:
        source = source.keep_classes(chosen_classes(cfg.classes, source.classes))
    check_learnable(source, cfg)
    train, val = split_holdout(source.train, cfg.val_size, cfg.split_seed)
    mean, std = input_statistics(cfg.get("normalization", "data"), train.images)
    input_size = cfg.get("input_size")
    common = {"mean": mean, "std": std, "channels_last": channels_last, "input_size": input_size}
    augment = BatchAugment(**cfg.augment)
    test = source.test.to(device) if source.test is not None else None
    return DataBundle(
        train=BatchLoader(
            train.to(device), batch_size, shuffle=True, drop_last=True, augment=augment, seed=seed, **common
        ),
        val=BatchLoader(val.to(device), eval_batch_size, shuffle=False, drop_last=False, **common),
        test=BatchLoader(test, eval_batch_size, shuffle=False, drop_last=False, **common) if test is not None else None,
        classes=source.classes,
        input_shape=(train.images.shape[1], *((input_size, input_size) if input_size else train.images.shape[2:])),
    )
