"""Fit the number of epochs to a wall-clock budget: measure a few steps, then plan a schedule that completes."""

import copy
import itertools
import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer

from cnnlab.data.loader import BatchLoader
from cnnlab.training.device import synchronize
from cnnlab.training.throughput import train_step

@torch.no_grad()
def _eval_seconds(model: nn.Module, loader: BatchLoader, flip_tta: bool) -> float:
    model.eval()
    images, _ = next(iter(loader))
    model(images)
    start = time.perf_counter()
    model(images)
    synchronize(images.device)
    return (time.perf_counter() - start) * len(loader) * (2 if flip_tta else 1)


def plan_epochs(
    model: nn.Module, make_optimizer: Callable[[nn.Module], Optimizer], loss_fn: nn.Module, train: BatchLoader,
    val: BatchLoader, budget_s: float, steps: int = 6, flip_tta: bool = False,
) -> tuple[int, float]:
    """How many whole epochs fit in `budget_s`, timed on a copy of the model (the run's state is untouched).

    Returns (epochs, estimated seconds per epoch). Global RNGs are saved and restored around the probe.
    """
    rng = torch.get_rng_state()
    probe = copy.deepcopy(model)
    probe.train()
    images, labels = next(iter(train))
    step = train_step(probe, make_optimizer(probe), loss_fn, itertools.repeat((images, labels)))
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize(images.device)
        timings.append(time.perf_counter() - start)
    step_s = sorted(timings[1:])[len(timings[1:]) // 2]  # median, without the warm-up step
    epoch_s = step_s * len(train) + _eval_seconds(probe, val, flip_tta)
    torch.set_rng_state(rng)
    return max(1, math.floor(budget_s / epoch_s)), epoch_s
