"""The learning-rate range test (`cnnlab lr-find`): train a fresh copy of the configured model for a few hundred
steps with the learning rate rising exponentially, and read a good learning rate off the loss curve.

The loss is smoothed with a bias-corrected exponential average (single batches are noisy), and the test stops
once the smoothed loss exceeds `diverge_factor` x its minimum. The suggestion is the learning rate at the minimum
of the smoothed loss divided by 3: a margin below the point where the loss starts to blow up. (The classic
divide-by-10 rule suggested a rate 10x too low in tests/benchmarks/bench_lr_find.py on CIFAR-10.) The range for a
search spans from 30x below that minimum to the minimum itself.
"""

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnlab.atomic import atomic_bytes_write
from cnnlab.data.build import build_data
from cnnlab.data.loader import BatchLoader
from cnnlab.device import flush_denormals, resolve_device, synchronize
from cnnlab.errors import UserError
from cnnlab.training.components import build_model, configured_finetune, configured_step, step_batch_size
from cnnlab.training.finetune import init_from
from cnnlab.training.run import seed_everything, training_sample
from cnnlab.training.step import TrainStep

log = logging.getLogger("cnnlab")

SUGGESTION_BELOW_MIN = 3  # the suggestion: the lr of the smoothed loss's minimum / this
RANGE_BELOW_MIN = (30, 1)  # a search's range: from the minimum's lr / 30 to the minimum's lr
MIN_STEPS_BEFORE_STOP = 10  # the divergence test waits this many steps (the first smoothed values are rough)


@dataclass
class RangeTest:
    """The learning rates tried, their losses (raw and smoothed), and what they suggest."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]

    @property
    def best_index(self) -> int:
        return min(range(len(self.smoothed)), key=self.smoothed.__getitem__)

    @property
    def min_loss_lr(self) -> float:
        return self.lrs[self.best_index]

    @property
    def suggestion(self) -> float:
        return self.min_loss_lr / SUGGESTION_BELOW_MIN

    @property
    def search_range(self) -> tuple[float, float]:
        low, high = RANGE_BELOW_MIN
        return self.min_loss_lr / low, self.min_loss_lr / high


def range_test(
    step: TrainStep,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    base_lr: float,
    start_lr: float,
    end_lr: float,
    steps: int,
    smoothing: float,
    diverge_factor: float,
) -> RangeTest:
    """Train through `step` on `batches` (an endless iterator of (images, labels)) with lr from start_lr to end_lr.

    Every parameter group's lr is scaled together (groups at lr x a factor keep their factor); the step's own
    schedule is set aside.
    """
    step.scheduler = None
    base = [group["lr"] / base_lr for group in step.optimizer.param_groups]
    test = RangeTest([], [], [])
    average = 0.0
    for index in range(steps):
        lr = start_lr * (end_lr / start_lr) ** (index / max(steps - 1, 1))
        for group, factor in zip(step.optimizer.param_groups, base):
            group["lr"] = lr * factor
        images, labels = next(batches)
        loss = step(images, labels)[0].item()
        if not math.isfinite(loss):
            break
        average = smoothing * average + (1 - smoothing) * loss
        smoothed = average / (1 - smoothing ** (index + 1))
        test.lrs.append(lr)
        test.losses.append(loss)
        test.smoothed.append(smoothed)
        if index >= MIN_STEPS_BEFORE_STOP and smoothed > diverge_factor * min(test.smoothed):
            break
    return test


def endless_batches(loader: BatchLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches epoch after epoch."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader.iterate()
        epoch += 1


def lr_find(cfg: DictConfig, run_dir: Path) -> RangeTest:
    """Run the range test on the configured model, data and optimizer; write lr_find.csv and lr_find.png into
    `run_dir` (its own folder: no run's checkpoints are touched) and print the suggestion."""
    settings = cfg.lr_find
    device = resolve_device(str(cfg.device))
    flush_denormals(device)
    seed_everything(cfg.seed)
    channels_last = bool(cfg.trainer.channels_last)
    data = build_data(cfg.dataset, step_batch_size(cfg), cfg.trainer.eval_batch_size, device, cfg.seed, channels_last)
    model = build_model(cfg, data.input_shape, len(data.classes))
    if hasattr(model, "init_from_data"):
        model.init_from_data(training_sample(data))
    if cfg.init_from:
        init_from(model, cfg.init_from)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    configured_finetune(cfg).apply(model, 0)  # what trains first: with finetune=head, the head alone
    step = configured_step(cfg, model, device, len(data.classes))
    log.info(
        "lr-find: %d steps from lr %.1e to %.1e on %s, batch %d",
        settings.steps,
        settings.start_lr,
        settings.end_lr,
        cfg.model._target_.rsplit(".", 1)[-1],
        data.train.batch_size,
    )
    test = range_test(
        step,
        endless_batches(data.train),
        float(cfg.lr),
        float(settings.start_lr),
        float(settings.end_lr),
        int(settings.steps),
        float(settings.smoothing),
        float(settings.diverge_factor),
    )
    synchronize(device)
    if len(test.lrs) < MIN_STEPS_BEFORE_STOP:
        raise UserError(
            f"lr-find: the loss was not finite after {len(test.lrs)} steps from lr={settings.start_lr:g}; "
            "start lower (lr_find.start_lr=1e-7) or check the data"
        )
    write_outputs(test, run_dir)
    return test


def write_outputs(test: RangeTest, run_dir: Path) -> None:
    rows = ["step,lr,loss,smoothed_loss"]
    points = zip(test.lrs, test.losses, test.smoothed)
    rows += [f"{i + 1},{lr:.6g},{loss:.6g},{smooth:.6g}" for i, (lr, loss, smooth) in enumerate(points)]
    atomic_bytes_write(("\n".join(rows) + "\n").encode(), run_dir / "lr_find.csv")
    from cnnlab.tracking.plots import save_lr_find

    save_lr_find(test.lrs, test.losses, test.smoothed, test.suggestion, run_dir / "lr_find.png")
