"""Images per second of a model for training (data + forward + backward + step) and for inference.

Shared by `cnnlab bench` and the benchmark scripts, so the numbers users see and the ones in the README
are measured the same way: warm-up steps first (allocator, kernel choice, compilation), then as many
timed steps as fit in a time box, with the device synchronised before the clock is read.
"""

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.device import autocast, synchronize
from cnnlab.training.step import TrainStep

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Timing:
    images_per_s: float
    warmup_s: float  # first steps, compile time included
    steps: int


def time_steps(
    step: Callable[[], int], device: torch.device, seconds: float, warmup: int = 2, min_steps: int = 3
) -> Timing:
    """Run `step` (which returns the images it processed) `warmup` times, then for about `seconds`."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    images, steps = 0, 0
    start = time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
        images += step()
        steps += 1
    synchronize(device)
    return Timing(images / (time.perf_counter() - start), warmup_s, steps)


def endless(batches: Iterable[Batch]) -> Iterator[Batch]:
    """Batches of a loader, epoch after epoch (a time box may outlast one epoch)."""
    return itertools.chain.from_iterable(itertools.repeat(batches))


def training_steps(step: TrainStep, batches: Iterator[Batch]) -> Callable[[], int]:
    """The run's training step on the next batch each call (returns the images it trained on)."""

    def train_next() -> int:
        images, labels = next(batches)
        step(images, labels)
        return labels.shape[0]

    return train_next


def inference_step(model: nn.Module, images: torch.Tensor, amp_dtype: torch.dtype | None = None) -> Callable[[], int]:
    """One forward pass over a fixed batch in eval mode without gradients."""

    def step() -> int:
        model.eval()
        with torch.no_grad(), autocast(images.device, amp_dtype):
            model(images)
        return images.shape[0]

    return step
