"""From the dataset config to ready loaders: load the source, hold out validation, compute statistics."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.data.augment import BatchAugment
from cnnlab.data.image_cache import describe_bytes
from cnnlab.data.loader import BatchLoader
from cnnlab.data.statistics import input_statistics
from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

log = logging.getLogger(__name__)


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


def overfit_subset(data: DataBundle, batches: int) -> DataBundle:
    """`trainer.overfit_batches`: the first `batches` training batches only, without augmentation, validated on the
    same images (no test). A model and input pipeline that can learn drive their loss near zero; if they cannot,
    something is broken (labels, learning rate, model) and no longer run will fix it."""
    train = data.train
    images = train.data.subset(torch.arange(min(len(train.data), batches * train.batch_size)))
    common = {
        "mean": train.mean.flatten(),
        "std": train.std.flatten(),
        "channels_last": train.memory_format == torch.channels_last,
        "input_size": train.input_size,
    }
    return replace(
        data,
        train=BatchLoader(images, train.batch_size, shuffle=True, drop_last=False, seed=train.seed, **common),
        val=BatchLoader(images, data.val.batch_size, shuffle=False, drop_last=False, **common),
        test=None,
    )


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


def fits_on(device: torch.device, data: ImageSet) -> bool:
    """Whether in-memory images may move onto the device: on a GPU only when they take under half its free
    memory, the rest being the model's. Images that do not fit stay in host memory and each batch is copied."""
    if device.type != "cuda" or data.mapped:
        return True
    free, _ = torch.cuda.mem_get_info(device)
    needed = data.images.numel()
    if needed < free // 2:
        return True
    log.info(
        "data: the images (%s) stay in host memory, as they would take over half of %s's free memory; each "
        "batch is copied to it",
        describe_bytes(needed),
        device,
    )
    return False


@dataclass(frozen=True)
class Shard:
    """Which part of the data a process of a data-parallel run holds: shard `rank` of `count` (1: all of it)."""

    rank: int = 0
    count: int = 1


def build_data(
    cfg: DictConfig,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    channels_last: bool,
    shard: Shard = Shard(),
) -> DataBundle:
    """Loaders over the configured data. Under data parallelism (`shard.count` > 1) each process holds and augments
    its own shard of every split and takes `batch_size / count` training images per step; the statistics are the
    whole training split's, so every process normalises alike."""
    source: SourceData = instantiate(cfg.source)
    if cfg.get("classes") is not None:
        source = source.keep_classes(chosen_classes(cfg.classes, source.classes))
    check_learnable(source, cfg)
    if shard.count == 1:
        pool = source.train.to(device, images_too=fits_on(device, source.train))  # moved once, split without copies
        train, val = split_holdout(pool, cfg.val_size, cfg.split_seed)
        mean, std = input_statistics(cfg.get("normalization", "data"), train)
        test = source.test
    else:
        if batch_size % shard.count:
            raise UserError(
                f"batch_size={batch_size} does not divide among {shard.count} processes: batch_size is the global "
                f"batch, so give a multiple of {shard.count}"
            )
        batch_size //= shard.count
        train, val = split_holdout(source.train, cfg.val_size, cfg.split_seed)
        mean, std = input_statistics(cfg.get("normalization", "data"), train)
        if min(len(val), len(source.test) if source.test is not None else len(val)) < shard.count:
            raise UserError(
                f"the validation or test split holds fewer images than the {shard.count} processes, so some would "
                "have none: raise dataset.val_size (or use fewer processes)"
            )
        train, val = (part.shard(shard.rank, shard.count, equal=part is train) for part in (train, val))
        train, val = (part.to(device, images_too=fits_on(device, part)) for part in (train, val))
        test = source.test.shard(shard.rank, shard.count) if source.test is not None else None
    input_size = cfg.get("input_size")
    common = {"mean": mean, "std": std, "channels_last": channels_last, "input_size": input_size}
    augment = BatchAugment(**cfg.augment)
    test = test.to(device, images_too=fits_on(device, test)) if test is not None else None
    return DataBundle(
        train=BatchLoader(train, batch_size, shuffle=True, drop_last=True, augment=augment, seed=seed, **common),
        val=BatchLoader(val, eval_batch_size, shuffle=False, drop_last=False, **common),
        test=BatchLoader(test, eval_batch_size, shuffle=False, drop_last=False, **common) if test is not None else None,
        classes=source.classes,
        input_shape=(train.images.shape[1], *((input_size, input_size) if input_size else train.images.shape[2:])),
    )
