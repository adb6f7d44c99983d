"""Learning-rate schedules, all stepped once per batch and built from (optimizer, total_steps, steps_per_epoch).

Each is a multiplier on every parameter group's initial lr (the top-level `lr`, times a group's factor)
as a function of (step, total_steps). The horizon `total_steps` is an attribute of the scheduler, not
baked into the function: a time-budgeted run re-plans it while it trains, and it is saved with the step
count, so a resumed run follows the same curve.
"""

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

Shape = Callable[[int, int], float]  # (step, total_steps) -> lr multiplier


class Schedule(LambdaLR):
    """LambdaLR over a movable horizon: set `total_steps` and the rest of the curve stretches or shrinks."""

    def __init__(self, optimizer: Optimizer, shape: Shape, total_steps: int) -> None:
        self.total_steps = max(1, int(total_steps))
        self._shape = shape
        super().__init__(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        return self._shape(step, self.total_steps)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("_shape", None)  # a function: rebuilt from the config, never saved
        return state


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.25,
    start_factor: float = 0.04,
    end_factor: float = 0.001,
) -> Schedule:
    """Linear warmup from lr*start_factor to lr, then linear decay to lr*end_factor."""

    def shape(step: int, total: int) -> float:
        warmup = max(1, int(total * warmup_fraction))
        if step < warmup:
            return start_factor + (1 - start_factor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1 - (1 - end_factor) * progress

    return Schedule(optimizer, shape, total_steps)


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 1, end_factor: float = 0.0
) -> Schedule:
    """Linear warmup over warmup_epochs, then half a cosine down to lr*end_factor."""

    def shape(step: int, total: int) -> float:
        warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return Schedule(optimizer, shape, total_steps)


def linear(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_fraction: float = 0.0, end_factor: float = 0.0
) -> Schedule:
    """Optional linear warmup over warmup_fraction of the steps, then a straight line from lr that reaches
    lr*end_factor exactly at the last step (the decay the fast CIFAR-10 recipes train with)."""

    def shape(step: int, total: int) -> float:
        warmup, last = min(int(total * warmup_fraction), total - 1), total - 1
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, last - warmup))
        return 1 - (1 - end_factor) * progress

    return Schedule(optimizer, shape, total_steps)


def step_decay(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, step_epochs: int = 3, gamma: float = 0.1
) -> Schedule:
    """Multiply the lr by gamma every step_epochs epochs."""
    return Schedule(optimizer, lambda step, total: gamma ** (step // (step_epochs * steps_per_epoch)), total_steps)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> Schedule:
    return Schedule(optimizer, lambda step, total: 1.0, total_steps)
