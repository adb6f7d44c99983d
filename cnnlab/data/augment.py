"""Augmentation of whole uint8 batches on the training device (no per-sample Python work)."""

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and cut a randomly placed crop of the original size from each image."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 put the channel dim last: (N, H, W, C).
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(images.shape[0], generator=gen, device=gen.device).to(images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class BatchAugment:
    """Random crop, horizontal flip and optional RandAugment, each switchable from the dataset config."""

    def __init__(
        self,
        crop_padding: int = 4,
        flip: bool = True,
        randaugment: bool = False,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        randaugment_group: int = 32,
    ) -> None:
        self.crop_padding = crop_padding
        self.flip = flip
        self.randaugment = None
        if randaugment:
            from torchvision.transforms import v2  # torchvision costs 1.7 s to import; only RandAugment needs it

            self.randaugment = v2.RandAugment(randaugment_ops, randaugment_magnitude)
        self.group = randaugment_group

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.randaugment is not None:
            # RandAugment draws one op sequence per call; calling it per group varies ops within a batch.
            images = torch.cat([self.randaugment(chunk) for chunk in images.split(self.group)])
        if self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, gen)
        if self.flip:
            images = random_flip(images, gen)
        return images
