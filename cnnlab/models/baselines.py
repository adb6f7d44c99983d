"""Baselines to compare against: a multilayer perceptron and the classic two-stage CNN."""

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import UserError
from cnnlab.models.checks import fraction, odd_kernel, whole_list


class MLP(nn.Module):
    """Flattened pixels through ReLU hidden layers to a linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = whole_list("hidden", hidden, "[512,256]")
        dropout = fraction("dropout", dropout)
        width = in_channels * image_size[0] * image_size[1]
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimpleCNN(nn.Module):
    """Two conv -> ReLU -> 2x2 max-pool stages, then a linear head over the flattened maps."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = whole_list("channels", channels, "[32,64]")
        if len(channels) != 2:
            raise UserError(f"model.channels needs two entries (one per stage), got {list(channels)}")
        kernel_size = odd_kernel(kernel_size)
        dropout = fraction("dropout", dropout)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size, padding=kernel_size // 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        height, width = image_size[0] // 4, image_size[1] // 4
        if height < 1 or width < 1:
            raise UserError(f"simple_cnn needs inputs of at least 4x4, got {tuple(image_size)}")
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * height * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
