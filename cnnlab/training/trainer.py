"""The training loop: fit (train + validate each epoch), then evaluate a split. It reads as the ideas it uses.

Everything the loop needs to continue exactly where it stopped - including the position inside an
epoch after an interrupt - is in `state_dict()`, so a resumed run repeats no step and skips none.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.checkpoints.store import CheckpointStore
from cnnlab.data.loader import BatchLoader
from cnnlab.device import synchronize
from cnnlab.errors import UserError
from cnnlab.tracking.tracker import Sink
from cnnlab.training.budget import StepBudget
from cnnlab.training.finetune import Finetune
from cnnlab.training.metrics import predict
from cnnlab.training.step import TrainStep

WARMUP_STEPS = 5  # the first steps of an epoch, slower (allocations, caches), are left out of its step time
REPLAN_SHARE = 0.02  # under a time budget, the plan is made again whenever this share of the budget has passed
LR_HINT = "the learning rate is probably too high (try a smaller lr)"  # what every divergence message advises
PruneRule = Callable[[int, dict[str, float]], bool]  # (epoch, that epoch's metrics) -> stop the run now?


class RunDiverged(UserError):
    """The loss became NaN/inf or exploded: the run cannot recover, so it stops at once."""


class RunInterrupted(UserError):
    """Ctrl-C or SIGTERM: the current step finished and last.pt holds the exact position."""

    exit_code = 130


@dataclass
class StopRules:
    """When fit ends before `epochs`: early stopping, divergence and the wall-clock budget."""

    patience: int | None = None  # epochs without a better validation accuracy
    divergence_factor: float | None = 10  # stop when the loss exceeds this multiple of its first value
    time_budget_s: float | None = None  # training seconds (resumed runs count their earlier time)
    prune: PruneRule | None = None  # a search's pruner, asked after each epoch


@dataclass
class FitResult:
    best_val_acc: float
    epochs_completed: int
    train_time_s: float
    stopped_by: str | None  # None (all epochs ran), "patience", "time_budget" or "pruned"


@dataclass
class EpochPosition:
    """Where inside an epoch the loop is: what an interrupt checkpoint needs to resume mid-epoch."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    generator: torch.Tensor | None = None


class Trainer:
    """Runs the training step over the epochs; reports every epoch to the tracker and the checkpoint store.

    The step (`TrainStep`) owns model, optimizer, schedule and precision; the scheduler must be set on it.
    """

    def __init__(
        self,
        step: TrainStep,
        *,
        tracker: Sink,
        log_every: int = 10,
        checkpoints: CheckpointStore | None = None,
        rules: StopRules | None = None,
        histograms: bool = False,
        tta: str = "none",
        tta_every_epoch: bool = True,
        finetune: Finetune | None = None,
        budget: StepBudget | None = None,
    ) -> None:
        if step.scheduler is None:
            raise ValueError("the Trainer's TrainStep needs a scheduler (its state is checkpointed)")
        self.train_step = step
        self.model = step.model
        self.optimizer = step.optimizer
        self.scheduler = step.scheduler
        self.averaging = step.averaging
        self.device = step.device
        self.tracker = tracker
        self.finetune = finetune
        self.log_every = log_every
        self.checkpoints = checkpoints
        self.rules = rules or StopRules()
        self.epoch = 0
        self.global_step = 0
        self.best_val_acc: float | None = None
        self.best_epoch: int | None = None  # the epoch whose weights are in best.pt
        self.epochs_since_best = 0
        self.train_time_s = 0.0
        self.first_loss: float | None = None
        self.position = EpochPosition()
        self.stop_requested = False
        self.histograms = histograms
        self.tta = tta  # a level of cnnlab.config.choices.TTA_LEVELS: the views validation and test average
        self.tta_every_epoch = tta_every_epoch  # False: only the last epoch's validation (and the test) use them
        self.budget = budget  # under a time budget: the run's length in steps, re-planned as it trains
        self._grad_norms: list[torch.Tensor] = []

    @property
    def plain_model(self) -> nn.Module:
        """The model itself, unwrapped from torch.compile (whose wrapper prefixes every state key)."""
        return getattr(self.model, "_orig_mod", self.model)

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights validation and test measure and checkpoints keep as "model" (what eval, predict, export and
        init_from load): the averaged copy under trainer.weight_averaging, else the model itself."""
        return self.averaging.module if self.averaging is not None else self.plain_model

    def _layers(self) -> list[tuple[str, nn.Parameter]]:
        """Conv and linear weights (the tensors whose distributions are worth watching)."""
        return [(name.removesuffix(".weight"), p) for name, p in self.plain_model.named_parameters() if p.ndim > 1]

    def _record_grad_norms(self) -> None:
        layers = self._layers()
        if layers and all(p.grad is not None for _, p in layers):
            self._grad_norms.append(torch.stack([p.grad.detach().float().norm() for _, p in layers]).cpu())

    def _report_tensors(self) -> None:
        if not self.histograms:
            return
        layers = self._layers()
        weights = {name: p.detach().float().cpu() for name, p in layers}
        norms = torch.stack(self._grad_norms) if self._grad_norms else torch.empty(0, len(layers))
        grad_norms = {name: norms[:, i] for i, (name, _) in enumerate(layers)} if norms.numel() else {}
        self.tracker.tensors(self.epoch, weights, grad_norms)
        self._grad_norms = []

    def _check_loss(self, loss: float, step: int) -> None:
        where = f"epoch {self.epoch + 1} step {step}"
        if not math.isfinite(loss):
            raise RunDiverged(f"training diverged at {where}: the loss is {loss}; {LR_HINT}")
        if self.first_loss is None:
            self.first_loss = loss
        factor = self.rules.divergence_factor
        if factor is not None and loss > factor * self.first_loss:
            raise RunDiverged(
                f"training diverged at {where}: the loss {loss:.3g} exceeds {factor:g}x its first value "
                f"{self.first_loss:.3g}; {LR_HINT}"
            )

    def _check_epoch_losses(self, train_loss: float, val_loss: float) -> None:
        """The loss is checked every log_every steps; a NaN between two checks still shows in the epoch's mean."""
        for split, loss in (("training", train_loss), ("validation", val_loss)):
            if not math.isfinite(loss):
                raise RunDiverged(f"training diverged in epoch {self.epoch + 1}: the {split} loss is {loss}; {LR_HINT}")

    def _out_of_time(self, epoch_start: float) -> bool:
        """The budget is spent (a run without a step plan stops there, even mid-epoch)."""
        budget = self.rules.time_budget_s
        return budget is not None and self.train_time_s + time.perf_counter() - epoch_start >= budget

    def _replan(self, used_s: float, step_s: float, eval_s: float | None = None) -> None:
        """Fit the rest of the schedule to the rest of the budget, at the pace just measured."""
        assert self.budget is not None
        self.scheduler.total_steps = self.budget.replan(used_s, self.global_step, step_s, eval_s)

    def _planned_end(self) -> bool:
        return self.budget is not None and self.global_step >= self.budget.total_steps

    def _planned_epochs(self, epochs: int, steps_per_epoch: int) -> int:
        """`epochs`, or under a step plan the epochs its steps touch (the last one may be partial)."""
        return epochs if self.budget is None else -(-self.budget.total_steps // steps_per_epoch)

    def train_epoch(self, loader: BatchLoader) -> dict[str, float]:
        """One pass over the training split (or its rest, when resuming mid-epoch)."""
        self.model.train()
        if self.finetune is not None:
            self.finetune.apply(self.plain_model, self.epoch)
        loader.set_epoch(self.epoch)
        pos = self.position
        loss_sum = torch.tensor(pos.loss_sum, device=self.device, dtype=torch.float64)
        correct = torch.tensor(pos.correct, device=self.device, dtype=torch.long)
        seen, resumed_seen = pos.seen, pos.seen
        start = time.perf_counter()
        steady_from, steady_start = None, start  # timing after the warm-up steps, for the budget's re-plans
        window_from, window_start = None, start
        batches = loader.iterate(pos.step, pos.generator)
        for step, (images, labels) in enumerate(batches, start=pos.step + 1):
            if step - pos.step == WARMUP_STEPS + 1 and self.budget is not None:
                synchronize(self.device)
                steady_from, steady_start = step - 1, time.perf_counter()
                window_from, window_start = steady_from, steady_start
            loss, logits = self.train_step(images, labels)
            self.global_step += 1
            loss_sum += loss.double() * labels.shape[0]
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.shape[0]
            if step % self.log_every == 0 or step == len(loader) or self.stop_requested:
                self._check_loss(loss.item(), step)  # waits for the device, so the clock below is true
                if window_from is not None and step > window_from:
                    now = time.perf_counter()
                    if now - window_start >= REPLAN_SHARE * self.budget.plan.budget_s:
                        used = self.train_time_s + now - start
                        self._replan(used, (now - window_start) / (step - window_from))
                        window_from, window_start = step, now
                if self.histograms:
                    self._record_grad_norms()
                elapsed = time.perf_counter() - start
                self.tracker.step(
                    step,
                    {
                        "loss": loss_sum.item() / seen,
                        "acc": correct.item() / seen,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "images_per_s": (seen - resumed_seen) / max(elapsed, 1e-9),
                        "global_step": self.global_step,  # optimizer steps since the run began: loggers' x axis
                    },
                )
            if self.stop_requested and step < len(loader):
                self.position = EpochPosition(
                    step, loss_sum.item(), int(correct.item()), seen, batches.generator_state()
                )
                self.train_time_s += time.perf_counter() - start
                self._save(best=False)
                raise RunInterrupted(f"interrupted at epoch {self.epoch + 1} step {step}")
            if self._planned_end() or (self.budget is None and self._out_of_time(start)):
                break
        synchronize(self.device)
        end = time.perf_counter()
        elapsed = end - start
        self.position = EpochPosition()
        steady_steps = step - (steady_from if steady_from is not None else pos.step)
        return {
            "loss": loss_sum.item() / seen,
            "acc": correct.item() / seen,
            "images_per_s": (seen - resumed_seen) / max(elapsed, 1e-9),
            "time_s": elapsed,
            "step_s": (end - steady_start) / max(1, steady_steps),
            "complete": step == len(loader) or self._planned_end(),
        }

    def predict(self, loader: BatchLoader, tta: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32) and labels over a whole split in eval mode, averaged over the views of the TTA level
        (the run's unless `tta` is given)."""
        model = self.model if self.averaging is None else self.evaluated_model  # the compiled net, or the average
        return predict(model, loader, self.train_step.amp_dtype, self.tta if tta is None else tta)

    def evaluate(self, loader: BatchLoader, tta: str | None = None) -> dict[str, float]:
        """Loss and accuracy over a whole split (validate and test both use this)."""
        logits, labels = self.predict(loader, tta)
        loss = nn.functional.cross_entropy(logits, labels).item()
        return {"loss": loss, "acc": (logits.argmax(1) == labels).double().mean().item()}

    def _save(self, best: bool) -> None:
        if self.checkpoints is not None:
            self.checkpoints.save(self.state_dict(), best=best)

    def fit(self, train: BatchLoader, val: BatchLoader, epochs: int) -> FitResult:
        """Train until `epochs` are done or a stop rule fires; checkpoint after every epoch."""
        stopped_by = None
        while self.epoch < self._planned_epochs(epochs, len(train)) and stopped_by is None:
            self.tracker.epoch_started(self.epoch + 1, self._planned_epochs(epochs, len(train)), len(train))
            epoch_start = time.perf_counter()
            stats = self.train_epoch(train)
            lr = self.optimizer.param_groups[0]["lr"]  # where the schedule stands at the end of the epoch
            if not stats["complete"]:  # the time budget ran out mid-epoch: validate what we have and stop
                stopped_by = "time_budget"
            last = stopped_by is not None or self.epoch + 1 >= self._planned_epochs(epochs, len(train))
            eval_start = time.perf_counter()
            val_stats = self.evaluate(val, None if last or self.tta_every_epoch else "none")
            eval_s = time.perf_counter() - eval_start
            self._check_epoch_losses(stats["loss"], val_stats["loss"])
            self.epoch += 1
            epoch_time = time.perf_counter() - epoch_start
            self.train_time_s += epoch_time
            if self.budget is not None and not self._planned_end():
                self._replan(self.train_time_s, stats["step_s"], eval_s)
            improved = self.best_val_acc is None or val_stats["acc"] > self.best_val_acc
            if improved:
                self.best_val_acc, self.best_epoch = val_stats["acc"], self.epoch
            self.epochs_since_best = 0 if improved else self.epochs_since_best + 1
            metrics = {
                "train/loss": stats["loss"],
                "train/acc": stats["acc"],
                "val/loss": val_stats["loss"],
                "val/acc": val_stats["acc"],
                "lr": lr,
                "throughput/images_per_s": stats["images_per_s"],
                "time/epoch_s": epoch_time,
            }
            self.tracker.epoch_ended(self.epoch, metrics)
            self._report_tensors()
            self._save(best=improved)
            if (
                stopped_by is None
                and self.epoch < epochs
                and self.rules.prune is not None
                and self.rules.prune(self.epoch, metrics)
            ):
                stopped_by = "pruned"
            if stopped_by is None and self.rules.patience is not None and self.epochs_since_best >= self.rules.patience:
                stopped_by = "patience"
            if (
                stopped_by is None
                and self.budget is None  # a step plan ends the run itself, after the schedule has annealed
                and self.rules.time_budget_s is not None
                and self.train_time_s >= self.rules.time_budget_s
            ):
                stopped_by = "time_budget"
        return FitResult(self.best_val_acc or 0.0, self.epoch, self.train_time_s, stopped_by)

    def state_dict(self) -> dict[str, Any]:
        pos = self.position
        return {
            "model": self.evaluated_model.state_dict(),
            **self._averaging_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.train_step.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "train_time_s": self.train_time_s,
            "epochs_since_best": self.epochs_since_best,
            "first_loss": self.first_loss,
            "total_steps": self.budget.total_steps if self.budget is not None else None,
            "position": {
                "step": pos.step,
                "loss_sum": pos.loss_sum,
                "correct": pos.correct,
                "seen": pos.seen,
                "generator": pos.generator,
            },
        }

    def _averaging_state(self) -> dict[str, Any]:
        """Under weight averaging, what resuming needs besides the averaged "model": the training weights and the
        averaging's counters."""
        if self.averaging is None:
            return {}
        return {"training_model": self.plain_model.state_dict(), "averaging": self.averaging.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plain_model.load_state_dict(state["model" if self.averaging is None else "training_model"])
        if self.averaging is not None:
            self.averaging.load_state_dict(state["averaging"], state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:  # torch's "parameter group that doesn't match the size of optimizer's group"
            raise UserError(
                "the checkpoint's optimizer state does not fit this run's parameter groups (a cnnlab version that "
                "grouped them differently wrote it); start a new run from its weights with init_from=<run folder>"
            ) from e
        self.scheduler.load_state_dict(state["scheduler"])
        self.train_step.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_val_acc, self.train_time_s = state["best_val_acc"], state["train_time_s"]
        self.epochs_since_best, self.first_loss = state["epochs_since_best"], state["first_loss"]
        self.best_epoch = state.get("best_epoch")  # absent from checkpoints written before it was recorded
        if self.budget is not None and state.get("total_steps"):
            self.budget.total_steps = state["total_steps"]
        self.position = EpochPosition(**state["position"])
