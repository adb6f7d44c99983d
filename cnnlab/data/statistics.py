"""The per-channel mean and std that inputs are normalised with: the data's own, or ImageNet's."""

import torch

from cnnlab.data.types import ImageSet
from cnnlab.errors import UserError


def channel_stats(data: ImageSet, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunks to bound memory."""
    channels, height, width = data.images.shape[1:]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in data.chunks(chunk):
        x = part.to(torch.float64).cpu() / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = len(data) * height * width
    mean = total / count
    std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def input_statistics(normalization: str, data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """`data`: the training split's own per-channel mean/std; `imagenet`: the statistics ImageNet-pretrained
    backbones were trained with (their first layers expect inputs normalised that way)."""
    if normalization == "data":
        return channel_stats(data)
    if data.images.shape[1] != 3:
        raise UserError(
            f"dataset.normalization=imagenet needs RGB images, these have {data.images.shape[1]} channel(s); "
            "use dataset.normalization=data or dataset.source.channels=3"
        )
    return torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
