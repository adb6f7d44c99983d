"""Batches served from uint8 images held on the training device, in host memory, or memory-mapped on disk."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.types import ImageSet


@dataclass(frozen=True)
class BatchOrigin:
    """Which images a batch holds and when: their positions in the loader's data set, the epoch and the seed.

    An augmentation that must treat an image the same way whatever batch it lands in, or whether the epoch
    was resumed midway (alternating flips), keys on these instead of on the generator's stream.
    """

    indices: torch.Tensor
    epoch: int
    seed: int


Augment = Callable[[torch.Tensor, BatchOrigin, torch.Generator], torch.Tensor]


class BatchLoader:
    """Shuffle, augment and normalise whole batches; the order depends only on (seed, epoch).

    Seeding per epoch makes any epoch reproducible on its own, which is what exact resume needs.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        shuffle: bool,
        drop_last: bool,
        augment: Augment | None = None,
        channels_last: bool = False,
        seed: int = 0,
        input_size: int | None = None,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.device = data.labels.device  # where batches go; the images may be stored elsewhere (see ImageSet.to)
        self.mean = mean.to(self.device).view(1, -1, 1, 1)
        self.std = std.to(self.device).view(1, -1, 1, 1)
        self.shuffle = shuffle
        self.drop_last = drop_last and len(data) > batch_size
        self.augment = augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.seed = seed
        self.epoch = 0
        self.input_size = input_size  # batches are resized to this square size on the device (None: as stored)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the model's float input; resized per batch, so large inputs never sit in memory."""
        x = (images.float() / 255 - self.mean) / self.std
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x.contiguous(memory_format=self.memory_format)

    def iterate(self, start_step: int = 0, generator_state: torch.Tensor | None = None) -> "Batches":
        """The epoch's batches from `start_step` on; with the generator state saved there, exactly as before."""
        return Batches(self, start_step, generator_state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.iterate())


class Batches:
    """One pass over a BatchLoader: shuffled order from (seed, epoch), then augmentation from that generator."""

    def __init__(self, loader: BatchLoader, start_step: int, generator_state: torch.Tensor | None) -> None:
        self.loader = loader
        self.epoch = loader.epoch  # the epoch the generator was seeded for
        self.generator = loader._generator()
        n = len(loader.data)
        device = loader.device
        self.order = (
            torch.randperm(n, generator=self.generator, device=device)
            if loader.shuffle
            else torch.arange(n, device=device)
        )
        if generator_state is not None:
            self.generator.set_state(generator_state)
        self.start_step = start_step

    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader, size = self.loader, self.loader.batch_size
        for start in range(self.start_step * size, len(loader) * size, size):
            index = self.order[start : start + size]
            images = loader.data.gather(index).to(loader.device, non_blocking=True)
            if loader.augment is not None:
                images = loader.augment(images, BatchOrigin(index, self.epoch, loader.seed), self.generator)
            yield loader.normalize(images), loader.data.labels[index]
