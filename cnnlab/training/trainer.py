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

from cnnlab.checkpoints.store import CheckpointStore, rng_states
from cnnlab.data.loader import BatchLoader
from cnnlab.device import synchronize
from cnnlab.errors import UserError
from cnnlab.tracking.tracker import Sink
from cnnlab.training.budget import StepBudget
from cnnlab.training.finetune import Finetune
from cnnlab.training.metrics import predict, report_counts, report_from_counts
from cnnlab.training.ranks import Ranks
from cnnlab.training.step import TrainStep, unwrapped

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


@dataclass
class Agreement:
    """What every rank of a data-parallel run acts on at a log step: the batch loss and the epoch's running totals
    over all ranks, whether any rank was asked to stop, and rank 0's view of the time budget and the step plan."""

    loss: float
    loss_sum: float
    correct: int
    seen: int
    stop: bool
    time_up: bool


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
        ranks: Ranks | None = None,
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
        self.ranks = ranks or Ranks()  # a data-parallel run's processes (rank 0 decides); one process by default
        self._grad_norms: list[torch.Tensor] = []

    @property
    def plain_model(self) -> nn.Module:
        """The model itself, unwrapped from torch.compile and DistributedDataParallel."""
        return unwrapped(self.model)

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
        """Fit the rest of the schedule to the rest of the budget, at the pace just measured (rank 0 plans; the
        others follow its plan at the next agreement)."""
        assert self.budget is not None
        self._follow_plan(self.budget.replan(used_s, self.global_step, step_s, eval_s))

    def _follow_plan(self, total_steps: int) -> None:
        assert self.budget is not None
        self.budget.total_steps = self.scheduler.total_steps = int(total_steps)

    def _at_log_step(self, step: int, steps: int) -> bool:
        """Where the loop reports, checks the loss and (data-parallel) the ranks agree. These steps are the same on
        every rank; a single process also stops at once when asked, a data-parallel run at the next of them."""
        return step % self.log_every == 0 or step == steps or (self.ranks.world_size == 1 and self.stop_requested)

    def _agree(self, loss: float, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, time_up: bool) -> Agreement:
        """The numbers every rank acts on at a log step: one all-reduce over the ranks (nothing for one process)."""
        if self.ranks.world_size == 1:
            return Agreement(loss, loss_sum.item(), int(correct.item()), seen, self.stop_requested, time_up)
        leader = float(self.ranks.leader)
        plan = self.budget.total_steps if self.budget is not None else 0
        values = [loss, loss_sum, correct, seen, self.stop_requested, leader * time_up, leader * plan]
        totals = self.ranks.sum(torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device))
        loss_total, loss_sum_total, correct_total, seen_total, stops, time_up_total, plan_total = totals.tolist()
        if self.budget is not None:
            self._follow_plan(round(plan_total))
        self.stop_requested = stops > 0
        return Agreement(
            loss_total / self.ranks.world_size,
            loss_sum_total,
            round(correct_total),
            round(seen_total),
            stops > 0,
            time_up_total > 0,
        )

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
        carried = pos if self.ranks.leader else EpochPosition()  # a resumed epoch's totals so far, counted once
        loss_sum = torch.tensor(carried.loss_sum, device=self.device, dtype=torch.float64)
        correct = torch.tensor(carried.correct, device=self.device, dtype=torch.long)
        seen, resumed_seen = carried.seen, pos.seen
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
            time_up = self.budget is None and self._out_of_time(start)
            if self._at_log_step(step, len(loader)):
                loss_value = loss.item()  # waits for the device, so the clock below is true
                if self.ranks.leader and window_from is not None and step > window_from:
                    now = time.perf_counter()
                    if now - window_start >= REPLAN_SHARE * self.budget.plan.budget_s:
                        used = self.train_time_s + now - start
                        self._replan(used, (now - window_start) / (step - window_from))
                        window_from, window_start = step, now
                agreed = self._agree(loss_value, loss_sum, correct, seen, time_up)
                self._check_loss(agreed.loss, step)
                time_up = agreed.time_up
                if self.histograms:
                    self._record_grad_norms()
                elapsed = time.perf_counter() - start
                self.tracker.step(
                    step,
                    {
                        "loss": agreed.loss_sum / agreed.seen,
                        "acc": agreed.correct / agreed.seen,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "images_per_s": (agreed.seen - resumed_seen) / max(elapsed, 1e-9),
                        "global_step": self.global_step,  # optimizer steps since the run began: loggers' x axis
                    },
                )
                if agreed.stop and step < len(loader):
                    self.position = EpochPosition(
                        step, agreed.loss_sum, agreed.correct, agreed.seen, batches.generator_state()
                    )
                    self.train_time_s += time.perf_counter() - start
                    self._save(best=False)
                    raise RunInterrupted(f"interrupted at epoch {self.epoch + 1} step {step}")
            elif self.ranks.world_size > 1:
                time_up = False  # rank 0's clock decides, at the next log step
            if self._planned_end() or time_up:
                break
        synchronize(self.device)
        end = time.perf_counter()
        elapsed = end - start
        self.position = EpochPosition()
        steady_steps = step - (steady_from if steady_from is not None else pos.step)
        totals = self.ranks.sum(torch.stack([loss_sum, correct.double(), torch.tensor(seen).to(loss_sum)]))
        loss_total, correct_total, seen_total = totals.tolist()
        return {
            "loss": loss_total / seen_total,
            "acc": correct_total / seen_total,
            "images_per_s": (seen_total - resumed_seen) / max(elapsed, 1e-9),
            "time_s": elapsed,
            "step_s": (end - steady_start) / max(1, steady_steps),
            "complete": step == len(loader) or self._planned_end(),
        }

    def predict(self, loader: BatchLoader, tta: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's logits (float32) and labels over a split (its shard, data-parallel) in eval mode, averaged
        over the views of the TTA level (the run's unless `tta` is given)."""
        # the compiled net, or the average; never DistributedDataParallel, whose forwards are collectives while the
        # ranks' shards of a split may differ by a batch
        model = self.model if self.averaging is None and self.ranks.world_size == 1 else self.evaluated_model
        return predict(model, loader, self.train_step.amp_dtype, self.tta if tta is None else tta)

    def evaluate(self, loader: BatchLoader, tta: str | None = None) -> dict[str, float]:
        """Loss and accuracy over a whole split (validate and test both use this), summed over the ranks' shards."""
        logits, labels = self.predict(loader, tta)
        loss_sum = nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        hits = (logits.argmax(1) == labels).sum().double()
        totals = self.ranks.sum(torch.stack([loss_sum, hits, torch.tensor(labels.numel()).to(loss_sum)]))
        loss_total, hits_total, count = totals.tolist()
        return {"loss": loss_total / count, "acc": hits_total / count}

    def report(self, loader: BatchLoader, num_classes: int) -> dict[str, Any]:
        """The classification report of a whole split (per-class scores, confusion), summed over the ranks' shards."""
        return report_from_counts(self.ranks.sum(report_counts(*self.predict(loader), num_classes)), num_classes)

    def _save(self, best: bool) -> None:
        """Checkpoint; on a data-parallel run every rank takes part (rank 0 writes what they all hold) and waits until
        the file is written, so no rank reads best.pt or leaves before it is there."""
        if self.checkpoints is None and self.ranks.world_size == 1:
            return
        state = self.state_dict()
        if self.checkpoints is not None:
            self.checkpoints.save(state, best=best)
        self.ranks.barrier()

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
                if self.ranks.leader:
                    self._replan(self.train_time_s, stats["step_s"], eval_s)
                self._follow_plan(self.ranks.share(self.budget.total_steps))
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
                and self.ranks.share(self.rules.prune is not None and self.rules.prune(self.epoch, metrics))
            ):
                stopped_by = "pruned"
            if stopped_by is None and self.rules.patience is not None and self.epochs_since_best >= self.rules.patience:
                stopped_by = "patience"
            if (
                stopped_by is None
                and self.budget is None  # a step plan ends the run itself, after the schedule has annealed
                and self.rules.time_budget_s is not None
                and self.ranks.share(self.train_time_s >= self.rules.time_budget_s)
            ):
                stopped_by = "time_budget"
        return FitResult(self.best_val_acc or 0.0, self.epoch, self.train_time_s, stopped_by)

    def state_dict(self) -> dict[str, Any]:
        """Everything resuming needs; on a data-parallel run, a collective: each rank's random state is in it too."""
        pos = self.position
        per_rank = {}
        if self.ranks.world_size > 1:
            per_rank = {"rank_states": self.ranks.gather({"rng": rng_states(), "generator": pos.generator})}
        return {
            **per_rank,
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
        position = EpochPosition(**state["position"])
        saved_ranks = state.get("rank_states") or [{"generator": position.generator}]
        if len(saved_ranks) == self.ranks.world_size:
            position.generator = saved_ranks[self.ranks.rank]["generator"]
        else:  # resumed on another number of processes: the shards differ, the epoch's rest draws a new order
            position.generator = None
        self.position = position
