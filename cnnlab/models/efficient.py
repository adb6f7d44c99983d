"""The efficient CNN: stem, stages of configurable blocks, global average (or max) pooling, linear head."""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.models.blocks import (
    ACTIVATIONS,
    BLOCKS,
    ConvBNAct,
    GlobalAvgPool,
    GlobalMaxPool,
    configure_batchnorm,
    init_identity,
)
from cnnlab.models.checks import fraction, odd_kernel, whole, whole_list
from cnnlab.models.whitening import PATCH_SIZE, PatchWhitening

# How stage i>0 halves the resolution: its first block strides by 2, or runs at full resolution and is
# followed by a 2x2 max-pool (4x that block's MACs, and more accuracy per epoch); maxpool_all pools after
# the first block of every stage, the first one included (the fast CIFAR-10 recipes' layout)
DOWNSAMPLING = ("stride", "maxpool", "maxpool_all")
# The first layer: a 3x3 ConvBNAct, or fixed 2x2 patch-whitening filters computed from the training images
STEMS = ("conv", "whiten")
# Convolution init: PyTorch's default, or the identity on the first channels (dirac)
INITS = ("default", "dirac")
# How the head reduces the last maps to one vector: their mean, or their maximum
HEAD_POOLS = {"avg": GlobalAvgPool, "max": GlobalMaxPool}


class EfficientCNN(nn.Module):
    """Stages described by parallel lists (widths, depths, blocks); stage i>0 (with maxpool_all every stage) opens
    by halving the resolution."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        stem_channels: int = 32,
        widths: Sequence[int] = (32, 64, 128, 256),
        depths: Sequence[int] = (1, 2, 2, 2),
        blocks: Sequence[str] = ("ds", "ds", "ds", "ds"),
        kernel_size: int = 3,
        se_ratio: float | Sequence[float] = 0.25,
        activation: str = "silu",
        dropout: float = 0.0,
        downsample: str = "stride",
        stem: str = "conv",
        init: str = "default",
        bn_momentum: float = 0.1,
        bn_frozen_scale: bool = False,
        pool_before_norm: bool = False,
        head_pool: str = "avg",
    ) -> None:
        super().__init__()
        for key, value, options in (
            ("downsample", downsample, DOWNSAMPLING),
            ("stem", stem, STEMS),
            ("init", init, INITS),
            ("head_pool", head_pool, HEAD_POOLS),
        ):
            if value not in options:
                raise UserError(f"model.{key}={value!r} is unknown; choose one of {', '.join(options)}")
        stem_channels = whole("stem_channels", stem_channels, example="32")
        widths = whole_list("widths", widths, "[32,64,128,256]")
        depths = whole_list("depths", depths, "[1,2,2,2]")
        if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence):
            raise UserError(f"model.blocks={blocks!r} is invalid: give one block type per stage, e.g. [ds,ds,ds,ds]")
        kernel_size = odd_kernel(kernel_size)
        dropout = fraction("dropout", dropout)
        se_ratios = _per_stage(se_ratio, len(widths))
        _check_stages(widths, depths, blocks, se_ratios, image_size, stem, downsample)
        bn_momentum = _momentum(bn_momentum)
        for key, flag in (("bn_frozen_scale", bn_frozen_scale), ("pool_before_norm", pool_before_norm)):
            if not isinstance(flag, bool):
                raise UserError(f"model.{key}={flag!r} is invalid: must be true or false")
        if activation not in ACTIVATIONS:
            raise UserError(f"model.activation={activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        layers, channels = _stem(stem, in_channels, stem_channels, act)
        for index, (width, depth, kind, ratio) in enumerate(zip(widths, depths, blocks, se_ratios)):
            for repeat in range(depth):
                opens = repeat == 0 and (index > 0 or downsample == "maxpool_all")  # this block halves the maps
                stride = 2 if opens and downsample == "stride" else 1
                pools = opens and downsample != "stride"
                inner_pool = pools and pool_before_norm  # pooled between the block's first conv and its BatchNorm
                layers.append(BLOCKS[kind](channels, width, stride, kernel_size, act, se_ratio=ratio, pool=inner_pool))
                if pools and not pool_before_norm:
                    layers.append(nn.MaxPool2d(2))
                channels = width
        self.features = nn.Sequential(*layers)
        # (the Flatten after the pool keeps the layer indices of earlier versions, so their checkpoints still load)
        pool = HEAD_POOLS[head_pool]()
        self.head = nn.Sequential(pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))
        if init == "dirac":
            init_identity(self)
        configure_batchnorm(self, bn_momentum, bn_frozen_scale)

    def init_from_data(self, images: torch.Tensor) -> None:
        """Compute what this model takes from the data rather than learns (the whitening stem's filters) from
        `images`, a sample of normalised training inputs (NCHW); nothing to do with a conv stem."""
        stem = self.features[0]
        if isinstance(stem, PatchWhitening):
            stem.init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _stem(kind: str, in_channels: int, stem_channels: int, act: Callable[[], nn.Module]) -> tuple[list[nn.Module], int]:
    """The first layers and their output channels: a 3x3 ConvBNAct, or the frozen whitening filters (2 x in_channels
    x 4 outputs, fixed by the patch size) followed by the activation."""
    if kind == "whiten":
        whitening = PatchWhitening(in_channels)
        return [whitening, act()], whitening.out_channels
    return [ConvBNAct(in_channels, stem_channels, 3, 1, act=act)], stem_channels


def _momentum(value: object) -> float:
    """BatchNorm momentum in PyTorch's convention: the weight of each new batch's statistics, in (0, 1]."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
        raise UserError(
            f"model.bn_momentum={value!r} is invalid: must be a number in (0, 1], the weight of each new batch's "
            "statistics (for example model.bn_momentum=0.1)"
        )
    return float(value)


def _per_stage(se_ratio: float | Sequence[float], stages: int) -> list[float]:
    """One squeeze-excitation ratio per stage: SE pays off on small maps and costs most on large ones."""

    def is_number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if is_number(se_ratio):
        return [float(se_ratio)] * stages
    if isinstance(se_ratio, str | bytes) or not isinstance(se_ratio, Sequence) or not all(map(is_number, se_ratio)):
        raise UserError(
            f"model.se_ratio={se_ratio!r} is invalid: give one number such as 0.25, "
            "or one number per stage such as [0,0,0,0.25]"
        )
    if len(se_ratio) != stages:
        raise UserError(
            f"model.se_ratio has {len(se_ratio)} entries for {stages} stages; give one number, or one per stage"
        )
    return [float(r) for r in se_ratio]


def _check_stages(
    widths: Sequence[int],
    depths: Sequence[int],
    blocks: Sequence[str],
    se_ratios: Sequence[float],
    image_size: Sequence[int],
    stem: str,
    downsample: str,
) -> None:
    if not (len(widths) == len(depths) == len(blocks)) or not widths:
        raise UserError(
            f"model.widths, model.depths and model.blocks need one entry per stage; got {len(widths)}, "
            f"{len(depths)} and {len(blocks)}"
        )
    unknown = sorted({b for b in blocks if b not in BLOCKS})
    if unknown:
        raise UserError(f"model.blocks has unknown block types {unknown}; choose from {sorted(BLOCKS)}")
    if not all(0 <= r <= 1 for r in se_ratios):
        raise UserError(f"model.se_ratio={list(se_ratios)} is invalid: use fractions in [0, 1] (0 disables SE)")
    side = min(image_size) - (PATCH_SIZE - 1 if stem == "whiten" else 0)  # the whitening stem has no padding
    halvings = len(widths) - (0 if downsample == "maxpool_all" else 1)
    if side // 2**halvings < 2:
        kind = "stride-2" if downsample == "stride" else "max-pooled"
        after = " after the whitening stem" if stem == "whiten" else ""
        raise UserError(
            f"model has {halvings} {kind} stages, too many for {tuple(image_size)} inputs "
            f"(maps would shrink below 2x2{after}); drop a stage from model.widths/depths/blocks"
        )
