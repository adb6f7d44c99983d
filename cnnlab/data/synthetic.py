"""A procedurally generated, learnable image classification set made in memory from a seed.

Class c has its own hue and one of five flip-symmetric patterns (horizontal stripes, vertical
stripes, checkerboard, rings, blob), so horizontal flips and small crops keep labels valid. Each
sample draws its phase, frequency, position, contrast, hue jitter and pixel noise.
"""

import math

import torch

from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

PATTERNS = 5


def _hue_to_rgb(hue: torch.Tensor) -> torch.Tensor:
    """Map hues in [0, 1) to saturated RGB colours in [0, 1], shape (N, 3)."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _patterns(kind: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    n = kind.shape[0]
    coords = torch.linspace(-1, 1, size)
    y, x = coords[:, None], coords[None, :]
    freq = (2.0 + 2.5 * torch.rand(n, generator=gen))[:, None, None]
    phase = (2 * math.pi * torch.rand(n, generator=gen))[:, None, None]
    cx, cy = ((torch.rand(2, n, generator=gen) - 0.5) * 0.6)[:, :, None, None]
    radius = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    candidates = torch.stack(
        [
            torch.sin(math.pi * freq * y + phase).expand(n, size, size),
            torch.sin(math.pi * freq * x + phase).expand(n, size, size),
            torch.sin(math.pi * freq * x + phase) * torch.sin(math.pi * freq * y + phase),
            torch.sin(2 * math.pi * freq * radius + phase),
            2 * torch.exp(-(radius**2) / 0.15) - 1,
        ],
        dim=1,
    )
    return candidates[torch.arange(n), kind]


def _generate(count: int, size: int, channels: int, num_classes: int, noise: float, gen: torch.Generator) -> ImageSet:
    labels = torch.randint(num_classes, (count,), generator=gen)
    pattern = _patterns(labels % PATTERNS, size, gen)
    contrast = (0.25 + 0.2 * torch.rand(count, generator=gen))[:, None, None, None]
    hue = (labels.float() / num_classes + 0.04 * torch.randn(count, generator=gen)) % 1.0
    colour = _hue_to_rgb(hue)[:, :, None, None]
    if channels == 1:
        colour = colour.mean(dim=1, keepdim=True)
    elif channels != 3:
        colour = colour[:, torch.arange(channels) % 3]
    image = 0.5 + contrast * pattern[:, None] * (0.5 + colour) + (colour - 0.5) * 0.3
    image = image + noise * contrast * torch.randn(count, channels, size, size, generator=gen)
    return ImageSet((image.clamp(0, 1) * 255).round().to(torch.uint8), labels)


def _check(train_size: int, test_size: int, image_size: int, channels: int, num_classes: int, noise: float) -> None:
    def whole(value: object, minimum: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    rules = [
        ("dataset.train_size", train_size, whole(train_size, 2), "a whole number >= 2", "5000"),
        ("dataset.test_size", test_size, whole(test_size, 0), "a whole number >= 0 (0: no test split)", "1000"),
        ("dataset.source.image_size", image_size, whole(image_size, 1), "a whole number of pixels >= 1", "32"),
        ("dataset.source.channels", channels, whole(channels, 1), "a whole number >= 1", "3"),
        ("dataset.source.num_classes", num_classes, whole(num_classes, 2), "a whole number >= 2", "10"),
        ("dataset.source.noise", noise, isinstance(noise, int | float) and 0 <= noise < 100, "a number >= 0", "0.35"),
    ]
    for key, value, ok, rule, example in rules:
        if not ok:
            raise UserError(f"{key}={value!r} is invalid: must be {rule} (for example {key}={example})")


def make_synthetic(
    train_size: int,
    test_size: int,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    noise: float = 0.35,
    seed: int = 1234,
) -> SourceData:
    """Generate the train pool and test split; the same arguments always give the same tensors."""
    _check(train_size, test_size, image_size, channels, num_classes, noise)
    gen = torch.Generator().manual_seed(seed)
    train = _generate(train_size, image_size, channels, num_classes, noise, gen)
    test = _generate(test_size, image_size, channels, num_classes, noise, gen) if test_size > 0 else None
    return SourceData(train, test, [f"class_{i}" for i in range(num_classes)])
