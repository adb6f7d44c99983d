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
    """Convolution without bias (BatchNorm supplies it), an optional 2x2 max-pool, BatchNorm, then an optional
    activation. Pooling right after the convolution runs BatchNorm and the activation on a quarter of the pixels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: Callable[[], nn.Module] | None = None,
        pool: bool = False,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            *([nn.MaxPool2d(2)] if pool else []),
            nn.BatchNorm2d(out_channels),
            *([act()] if act is not None else []),
        )


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions, (N, C, H, W) -> (N, C). A plain mean rather than AdaptiveAvgPool2d, whose
    CUDA backward has no deterministic kernel (`trainer.deterministic=true` would refuse it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class GlobalMaxPool(nn.Module):
    """Maximum over the spatial dimensions, (N, C, H, W) -> (N, C): each channel reports its strongest response
    anywhere in the image (the fast CIFAR-10 recipes' head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


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
    """Depthwise kxk conv, [2x2 max-pool], BN, act, optional squeeze-excite, pointwise 1x1 conv, BN; residual when
    shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        act: Callable[[], nn.Module],
        se_ratio: float = 0.0,
        pool: bool = False,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(
            in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act, pool=pool
        )
        self.se = SqueezeExcite(in_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.pointwise = ConvBNAct(in_channels, out_channels, 1)
        self.residual = stride == 1 and not pool and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.se(self.depthwise(x)))
        return x + out if self.residual else out


class ConvBlock(nn.Module):
    """Dense kxk conv, [2x2 max-pool], BN, act; residual when shapes match. Cheaper in wall time than depthwise at
    high resolution."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int,
        act: Callable[[], nn.Module],
        se_ratio: float = 0.0,
        pool: bool = False,
    ) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels, out_channels, kernel_size, stride, act=act, pool=pool)
        self.se = SqueezeExcite(out_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.residual = stride == 1 and not pool and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.conv(x))
        return x + out if self.residual else out


BLOCKS: dict[str, type[nn.Module]] = {"ds": DepthwiseSeparable, "conv": ConvBlock}


def init_identity(model: nn.Module) -> None:
    """Dirac initialisation of every convolution followed by BatchNorm (each ConvBNAct): the identity on its first
    min(in, out) channels, the other output channels keeping their default init, so that the deep network starts
    near a shallow one and trains in fewer epochs. Dense and depthwise convolutions qualify; other grouped ones,
    whose groups do not line up with the channels, keep their default init."""
    for module in model.modules():
        if not isinstance(module, ConvBNAct):
            continue
        conv = module[0]
        if conv.groups == 1:
            nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])
        elif conv.groups == conv.in_channels == conv.out_channels:
            nn.init.dirac_(conv.weight, groups=conv.groups)


def freeze_scale(norm: nn.BatchNorm2d) -> None:
    """Fix a BatchNorm's scale at 1, leaving its bias to learn (the fast CIFAR-10 recipes train better so).

    The scale becomes a buffer of ones under the same name: no optimizer, fine-tuning mode or weight decay can
    move it, and state dicts keep their keys."""
    del norm.weight
    norm.register_buffer("weight", torch.ones(norm.num_features))


def configure_batchnorm(model: nn.Module, momentum: float, frozen_scale: bool) -> None:
    """Every BatchNorm's running-statistics momentum (PyTorch's: the weight of each new batch), and optionally
    its scale frozen at 1."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
            if frozen_scale:
                freeze_scale(module)
