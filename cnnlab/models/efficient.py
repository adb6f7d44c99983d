"""The efficient CNN: stem, stages of configurable blocks, global average pooling, linear head."""

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.models.blocks import ACTIVATIONS, BLOCKS, ConvBNAct


class EfficientCNN(nn.Module):
    """Stages described by parallel lists (widths, depths, blocks); stage i>0 opens with a stride-2 block."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: Sequence[int], stem_channels: int = 32,
        widths: Sequence[int] = (32, 64, 128, 256), depths: Sequence[int] = (1, 2, 2, 2),
        blocks: Sequence[str] = ("ds", "ds", "ds", "ds"), kernel_size: int = 3, se_ratio: float = 0.25,
        activation: str = "silu", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_stages(widths, depths, blocks, kernel_size, se_ratio, image_size)
        if activation not in ACTIVATIONS:
            raise UserError(f"model.activation={activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = [ConvBNAct(in_channels, stem_channels, 3, 1, act=act)]
        channels = stem_channels
        for index, (width, depth, kind) in enumerate(zip(widths, depths, blocks)):
            for repeat in range(depth):
                stride = 2 if index > 0 and repeat == 0 else 1
                layers.append(BLOCKS[kind](channels, width, stride, kernel_size, act, se_ratio=se_ratio))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _check_stages(
    widths: Sequence[int], depths: Sequence[int], blocks: Sequence[str], kernel_size: int, se_ratio: float,
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
    if any(int(w) < 1 for w in widths) or any(int(d) < 1 for d in depths):
        raise UserError("model.widths and model.depths must be whole numbers >= 1")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserError(f"model.kernel_size={kernel_size} is invalid: use an odd number such as 3 or 5")
    if not 0 <= se_ratio <= 1:
        raise UserError(f"model.se_ratio={se_ratio} is invalid: use a fraction in [0, 1] (0 disables SE)")
    smallest = min(image_size) / 2 ** (len(widths) - 1)
    if smallest < 2:
        raise UserError(
            f"model has {len(widths) - 1} stride-2 stages, too many for {tuple(image_size)} inputs "
            f"(maps would shrink below 2x2); drop a stage from model.widths/depths/blocks"
        )
