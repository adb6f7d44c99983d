"""Fit the number of epochs to a wall-clock budget: time a few steps, then plan a schedule that completes."""

import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from cnnlab.data.loader import BatchLoader
from cnnlab.device import synchronize
from cnnlab.training.metrics import predict
from cnnlab.training.step import TrainStep


def _eval_seconds(model: nn.Module, loader: BatchLoader, amp_dtype: torch.dtype | None, flip_tta: bool) -> float:
    """Seconds to predict the whole split, as validation does it, from one timed batch."""
    batch = [next(iter(loader))]
    predict(model, batch, amp_dtype, flip_tta)  # warm-up
    start = time.perf_counter()
    predict(model, batch, amp_dtype, flip_tta)
    synchronize(next(model.parameters()).device)
    return (time.perf_counter() - start) * len(loader)


def plan_epochs(
    model: nn.Module,
    make_step: Callable[[nn.Module], TrainStep],
    train: BatchLoader,
    val: BatchLoader,
    budget_s: float,
    steps: int = 6,
    flip_tta: bool = False,
) -> tuple[int, float]:
    """How many whole epochs fit in `budget_s`, timed on a copy of the model (the run's state is untouched).

    `make_step` builds the run's own training step over the copy, so the probe times exactly what the
    loop will run (precision included). Returns (epochs, estimated seconds per epoch). Global RNGs are
    saved and restored around the probe.
    """
    rng = torch.get_rng_state()
    probe = copy.deepcopy(model)
    probe.train()
    step = make_step(probe)
    images, labels = next(iter(train))
    timings = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, labels)
        synchronize(images.device)
        timings.append(time.perf_counter() - start)
    step_s = sorted(timings[1:])[len(timings[1:]) // 2]  # median, without the warm-up step
    epoch_s = step_s * len(train) + _eval_seconds(probe, val, step.amp_dtype, flip_tta)
    torch.set_rng_state(rng)
    return max(1, math.floor(budget_s / epoch_s)), epoch_s
