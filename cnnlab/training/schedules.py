"""Learning-rate schedules, all stepped once per batch and built from (optimizer, total_steps, steps_per_epoch).

Each is a multiplier on the optimizer's base lr (the top-level `lr`), wrapped in LambdaLR so that
its state is just the step count and resumes exactly.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.25,
    start_factor: float = 0.04,
    end_factor: float = 0.001,
) -> LambdaLR:
    """Linear warmup from lr*start_factor to lr, then linear decay to lr*end_factor."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return start_factor + (1 - start_factor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1 - (1 - end_factor) * progress

    return LambdaLR(optimizer, factor)


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 1, end_factor: float = 0.0
) -> LambdaLR:
    """Linear warmup over warmup_epochs, then half a cosine down to lr*end_factor."""
    warmup = min(int(warmup_epochs * steps_per_epoch), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return end_factor + (1 - end_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def step_decay(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, step_epochs: int = 3, gamma: float = 0.1
) -> LambdaLR:
    """Multiply the lr by gamma every step_epochs epochs."""
    return LambdaLR(optimizer, lambda step: gamma ** (step // (step_epochs * steps_per_epoch)))


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)
