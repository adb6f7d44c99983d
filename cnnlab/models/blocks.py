"""Building blocks sharing one constructor convention: (in_channels, out_channels, stride, kernel_size, act)."""

from collections.abc import Callable

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
    "hardswish": lambda: nn.Hardswish(inplace=True),
}


class ConvBNAct(nn.Sequential):
    """Convolution without bias (BatchNorm supplies it), BatchNorm, then an optional activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            *([act()] if act is not None else []),
        )


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool, bottleneck with ReLU, sigmoid gate, rescale channels."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(channels * ratio)))
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(scale))))
        return x * scale


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk conv, BN, act, optional squeeze-excite, pointwise 1x1 conv, BN; residual when shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        act: Callable[[], nn.Module],
        se_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act)
        self.se = SqueezeExcite(in_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.pointwise = ConvBNAct(in_channels, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.se(self.depthwise(x)))
        return x + out if self.residual else out


class ConvBlock(nn.Module):
    """Dense kxk conv, BN, act; residual when shapes match. Cheaper in wall time than depthwise at high resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        act: Callable[[], nn.Module],
        se_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, out_channels, kernel_size, stride, act=act)
        self.se = SqueezeExcite(out_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv(x))
        return x + out if self.residual else out


BLOCKS: dict[str, type[nn.Module]] = {"ds": DepthwiseSeparable, "conv": ConvBlock}
