"""Augmentation of whole uint8 batches on the training device (no per-sample Python work)."""

import torch
import torch.nn.functional as F

from cnnlab.config.choices import FLIP_MODES, PAD_MODES
from cnnlab.data.loader import BatchOrigin

_MODULUS = 2_147_483_647  # the prime 2**31 - 1: a residue times a multiplier below 2**31 stays inside int64
# (multiplier, increment) per mixing round of image_coins; odd multipliers below 2**31
_ROUNDS = ((1_103_515_245, 12_345), (1_664_525, 1_013_904_223), (22_695_477, 1))


def reflect_index(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Positions past either edge mirrored back inside, the edge pixel not repeated (F.pad's "reflect").

    Valid for overshoots smaller than `size`, which a padding below the image size guarantees.
    """
    last = size - 1
    return last - (last - positions.abs()).abs()


def random_crop(images: torch.Tensor, padding: int, gen: torch.Generator, pad_mode: str = "zeros") -> torch.Tensor:
    """Pad by `padding` (zeros, or the image mirrored at its edges) and cut a randomly placed crop of the
    original size from each image.

    Both modes draw the same offsets, so a seed gives the same translations with either border.
    """
    n, _, h, w = images.shape
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)
    cols = dx[:, None] + torch.arange(w, device=images.device)
    if pad_mode == "reflect":  # index the image itself: no padded copy, and uint8 needs no float round trip
        source, rows, cols = images, reflect_index(rows - padding, h), reflect_index(cols - padding, w)
    else:
        source = F.pad(images, (padding, padding, padding, padding))
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 put the channel dim last: (N, H, W, C).
    return source[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def translate(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Every image seen through a window moved `dy` rows down and `dx` columns right, the border filled by
    reflection: the window at offset (p + dy, p + dx) of the image reflect-padded by p >= |dy|, |dx|."""
    h, w = images.shape[-2:]
    rows = reflect_index(torch.arange(h, device=images.device) + dy, h)
    cols = reflect_index(torch.arange(w, device=images.device) + dx, w)
    return images[:, :, rows[:, None], cols[None, :]]


def mirror_where(images: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """The images with those where `mirror` is true mirrored left-right."""
    return torch.where(mirror.to(images.device)[:, None, None, None], images.flip(3), images)


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    return mirror_where(images, torch.rand(images.shape[0], generator=gen, device=gen.device) < 0.5)


def image_coins(seed: int, indices: torch.Tensor) -> torch.Tensor:
    """A fair coin per image, from (seed, position in the data set) alone.

    An image gets the same toss whichever batch it lands in and whether or not the epoch was resumed
    midway, which draws from a generator's stream cannot promise. Integer mixing modulo a prime keeps it
    identical on every device.
    """
    h = indices.to(torch.int64) % _MODULUS
    for i, (multiplier, increment) in enumerate(_ROUNDS):
        h = (h * multiplier + (seed % _MODULUS if i == 0 else increment)) % _MODULUS
        h = h ^ (h >> 16)
    return h > _MODULUS // 2


def alternating_flip(images: torch.Tensor, origin: BatchOrigin) -> torch.Tensor:
    """Mirror a random half of the images in epoch 0, then each image exactly when it was not mirrored the epoch
    before: any two consecutive epochs show every image once as it is and once mirrored (less redundancy than
    independent coin flips, so training needs fewer epochs)."""
    odd_epoch = origin.epoch % 2 == 1
    return mirror_where(images, image_coins(origin.seed, origin.indices) ^ odd_epoch)


class BatchAugment:
    """Random crop, horizontal flip and optional RandAugment, each switchable from the dataset config."""

    def __init__(
        self,
        crop_padding: int = 4,
        flip: bool = True,
        flip_mode: str = "random",
        pad_mode: str = "zeros",
        randaugment: bool = False,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        randaugment_group: int = 32,
    ) -> None:
        for name, value, choices in (("flip_mode", flip_mode, FLIP_MODES), ("pad_mode", pad_mode, PAD_MODES)):
            if value not in choices:
                raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
        self.crop_padding = crop_padding
        self.flip = flip
        self.flip_mode = flip_mode
        self.pad_mode = pad_mode
        self.randaugment = None
        if randaugment:
            from torchvision.transforms import v2  # torchvision costs 1.7 s to import; only RandAugment needs it

            self.randaugment = v2.RandAugment(randaugment_ops, randaugment_magnitude)
        self.group = randaugment_group

    def __call__(self, images: torch.Tensor, origin: BatchOrigin, gen: torch.Generator) -> torch.Tensor:
        if self.randaugment is not None:
            # RandAugment draws one op sequence per call; calling it per group varies ops within a batch.
            images = torch.cat([self.randaugment(chunk) for chunk in images.split(self.group)])
        if self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, gen, self.pad_mode)
        if self.flip:
            images = alternating_flip(images, origin) if self.flip_mode == "alternate" else random_flip(images, gen)
        return images
