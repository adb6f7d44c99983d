"""Fit a run to a wall-clock budget: time a few steps, plan the optimizer steps that fit, and re-plan as it runs.

The plan is in steps, not whole epochs: the last epoch may be partial, so the schedule anneals exactly
when the budget ends instead of leaving a fraction of an epoch's time unused. A probe of a few steps is
easily fooled by a busy machine, so every epoch end re-plans from the epoch just measured.
"""

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.data.loader import BatchLoader
from cnnlab.device import synchronize
from cnnlab.training.metrics import predict
from cnnlab.training.step import TrainStep


def _eval_seconds(model: nn.Module, loader: BatchLoader, amp_dtype: torch.dtype | None, tta: str) -> float:
    """Seconds to predict the whole split, as validation does it (every TTA view's forward), from one timed batch."""
    batch = [next(iter(loader))]
    predict(model, batch, amp_dtype, tta)  # warm-up
    start = time.perf_counter()
    predict(model, batch, amp_dtype, tta)
    synchronize(next(model.parameters()).device)
    return (time.perf_counter() - start) * len(loader)


@dataclass
class BudgetPlan:
    """Seconds a training step and a validation pass take, and the steps that fit the rest of the budget."""

    budget_s: float
    steps_per_epoch: int
    step_s: float
    eval_s: float
    final_eval_s: float  # the last validation's (with TTA when trainer.tta_every_epoch is false, eval_s otherwise)

    def cost_s(self, done_steps: int, more_steps: int) -> float:
        """Seconds for `more_steps` after `done_steps`, with the validation at the end of every epoch they finish
        (the last, possibly partial, epoch included, at the final validation's cost)."""
        validations = -(-(done_steps + more_steps) // self.steps_per_epoch) - done_steps // self.steps_per_epoch
        final = self.final_eval_s - self.eval_s if more_steps > 0 else 0.0
        return more_steps * self.step_s + validations * self.eval_s + final

    def total_steps(self, used_s: float, done_steps: int) -> int:
        """The run's whole length in steps when `used_s` of the budget went into the first `done_steps`."""
        low, high = 0, max(0, math.ceil((self.budget_s - used_s) / self.step_s))
        while low < high:  # the most steps whose cost fits what is left (cost grows with the steps)
            middle = (low + high + 1) // 2
            low, high = (
                (middle, high) if self.cost_s(done_steps, middle) <= self.budget_s - used_s else (low, middle - 1)
            )
        return max(done_steps + low, 1)

    def measured(self, step_s: float, eval_s: float) -> "BudgetPlan":
        """The plan at a measured pace. The last validation (with TTA) runs only once, at the end, so its time
        follows the measured validations: a probe slowed by a busy machine no longer reserves too much for it."""
        final_eval_s = self.final_eval_s * eval_s / self.eval_s if self.eval_s > 0 else self.final_eval_s
        return BudgetPlan(self.budget_s, self.steps_per_epoch, step_s, eval_s, final_eval_s)


def probe_plan(
    model: nn.Module,
    make_step: Callable[[nn.Module], TrainStep],
    train: BatchLoader,
    val: BatchLoader,
    budget_s: float,
    steps: int = 6,
    tta: str = "none",
    tta_every_epoch: bool = True,
) -> BudgetPlan:
    """The first plan, timed on a copy of the model (the run's state is untouched).

    `make_step` builds the run's own training step over the copy, so the probe times exactly what the
    loop will run (precision included). Global RNGs are saved and restored around the probe.
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
    final_eval_s = _eval_seconds(probe, val, step.amp_dtype, tta)
    eval_s = final_eval_s if tta_every_epoch or tta == "none" else _eval_seconds(probe, val, step.amp_dtype, "none")
    torch.set_rng_state(rng)
    return BudgetPlan(budget_s, len(train), step_s, eval_s, final_eval_s)


FINISH_OVERRUN = 0.03  # the share of the budget a run may overrun to finish a schedule that has nearly annealed


class StepBudget:
    """A time-budgeted run's length in steps, re-planned as it trains from the pace just measured (every few
    percent of the budget, and at every epoch end with the validation's time).

    The latest pace stands for the rest of the run: a machine that was busy for a while, or a probe
    fooled by warm-up, no longer decides how long the run trains.
    """

    def __init__(self, plan: BudgetPlan, total_steps: int) -> None:
        self.plan = plan
        self.total_steps = total_steps

    def replan(self, used_s: float, done_steps: int, step_s: float, eval_s: float | None = None) -> int:
        """The new total at a pace of `step_s` per step and `eval_s` per validation (None: as before).

        When nothing more fits but the schedule has a few steps left before it anneals, they still run
        (over the budget by at most FINISH_OVERRUN of it): a schedule cut short ends at a high learning rate.
        """
        self.plan = self.plan.measured(step_s, self.plan.eval_s if eval_s is None else eval_s)
        fits = self.plan.total_steps(used_s, done_steps)
        left = self.total_steps - done_steps
        finish = fits <= done_steps < self.total_steps and self.plan.cost_s(done_steps, left) <= (
            FINISH_OVERRUN * self.plan.budget_s
        )
        self.total_steps = self.total_steps if finish else max(done_steps, fits)
        return self.total_steps
