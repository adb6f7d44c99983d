"""Batches served from an in-memory uint8 tensor that already sits on the training device."""

from collections.abc import Callable, Iterator

import torch

from cnnlab.data.types import ImageSet

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class BatchLoader:
    """Shuffle, augment and normalise whole batches; the order depends only on (seed, epoch).

    Seeding per epoch makes any epoch reproducible on its own, which is what exact resume needs.
    """

    def __init__(
        self, data: ImageSet, batch_size: int, mean: torch.Tensor, std: torch.Tensor, *, shuffle: bool,
        drop_last: bool, augment: Augment | None = None, channels_last: bool = False, seed: int = 0,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.device = data.images.device
        self.mean = mean.to(self.device).view(1, -1, 1, 1)
        self.std = std.to(self.device).view(1, -1, 1, 1)
        self.shuffle = shuffle
        self.drop_last = drop_last and len(data) > batch_size
        self.augment = augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = self._generator()
        n = len(self.data)
        order = torch.randperm(n, generator=gen, device=self.device) if self.shuffle else torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.data.images[index]
            if self.augment is not None:
                images = self.augment(images, gen)
            yield self.normalize(images), self.data.labels[index]
