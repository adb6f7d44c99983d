"""The efficient CNN: stem, stages of configurable blocks, global average pooling, linear head."""

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.models.blocks import ACTIVATIONS, BLOCKS, ConvBNAct
from cnnlab.models.checks import fraction, odd_kernel, whole, whole_list

# How stage i>0 halves the resolution: its first block strides by 2, or runs at full resolution and is
# followed by a 2x2 max-pool (4x that block's MACs, and more accuracy per epoch)
DOWNSAMPLING = ("stride", "maxpool")


class EfficientCNN(nn.Module):
    """Stages described by parallel lists (widths, depths, blocks); stage i>0 opens by halving the resolution."""

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
    ) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLING:
            raise UserError(f"model.downsample={downsample!r} is unknown; choose one of {', '.join(DOWNSAMPLING)}")
        stem_channels = whole("stem_channels", stem_channels, example="32")
        widths = whole_list("widths", widths, "[32,64,128,256]")
        depths = whole_list("depths", depths, "[1,2,2,2]")
        if isinstance(blocks, str | bytes) or not isinstance(blocks, Sequence):
            raise UserError(f"model.blocks={blocks!r} is invalid: give one block type per stage, e.g. [ds,ds,ds,ds]")
        kernel_size = odd_kernel(kernel_size)
        dropout = fraction("dropout", dropout)
        se_ratios = _per_stage(se_ratio, len(widths))
        _check_stages(widths, depths, blocks, se_ratios, image_size)
        if activation not in ACTIVATIONS:
            raise UserError(f"model.activation={activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [ConvBNAct(in_channels, stem_channels, 3, 1, act=act)]
        channels = stem_channels
        for index, (width, depth, kind, ratio) in enumerate(zip(widths, depths, blocks, se_ratios)):
            for repeat in range(depth):
                reduce = index > 0 and repeat == 0
                stride = 2 if reduce and downsample == "stride" else 1
                layers.append(BLOCKS[kind](channels, width, stride, kernel_size, act, se_ratio=ratio))
                if reduce and downsample == "maxpool":
                    layers.append(nn.MaxPool2d(2))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


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
    smallest = min(image_size) / 2 ** (len(widths) - 1)
    if smallest < 2:
        raise UserError(
            f"model has {len(widths) - 1} stride-2 stages, too many for {tuple(image_size)} inputs "
            f"(maps would shrink below 2x2); drop a stage from model.widths/depths/blocks"
        )
