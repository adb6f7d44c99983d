"""The training loop: fit (train + validate each epoch), validate, test. It reads as the ideas it uses."""

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.checkpoints.store import CheckpointStore
from cnnlab.data.loader import BatchLoader
from cnnlab.tracking.tracker import Sink


@dataclass
class FitResult:
    best_val_acc: float
    epochs_completed: int
    train_time_s: float


class Trainer:
    """Owns model, optimizer and schedule; reports every epoch to the tracker and the checkpoint store."""

    def __init__(
        self, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler, *, device: torch.device, tracker: Sink,
        label_smoothing: float = 0.0, amp_dtype: torch.dtype | None = None, log_every: int = 10,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.tracker = tracker
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.log_every = log_every
        self.checkpoints = checkpoints
        self.epoch = 0
        self.global_step = 0
        self.best_val_acc: float | None = None
        self.train_time_s = 0.0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_epoch(self, loader: BatchLoader) -> dict[str, float]:
        self.model.train()
        loader.set_epoch(self.epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        for step, (images, labels) in enumerate(loader, start=1):
            with self._autocast():
                logits = self.model(images)
                loss = self.loss_fn(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.global_step += 1
            loss_sum += loss.detach() * labels.shape[0]
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.shape[0]
            if step % self.log_every == 0 or step == len(loader):
                elapsed = time.perf_counter() - start
                self.tracker.step(step, {
                    "loss": loss_sum.item() / seen, "acc": correct.item() / seen,
                    "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": seen / max(elapsed, 1e-9),
                })
        self._sync()
        elapsed = time.perf_counter() - start
        return {"loss": loss_sum.item() / seen, "acc": correct.item() / seen, "images_per_s": seen / elapsed, "time_s": elapsed}

    @torch.no_grad()
    def evaluate(self, loader: BatchLoader) -> dict[str, float]:
        """Loss and accuracy over a whole split, in eval mode (validate and test both use this)."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for images, labels in loader:
            with self._autocast():
                logits = self.model(images)
            loss_sum += nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        n = len(loader.data)
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}

    validate = evaluate
    test = evaluate

    def fit(self, train: BatchLoader, val: BatchLoader, epochs: int) -> FitResult:
        while self.epoch < epochs:
            self.tracker.epoch_started(self.epoch + 1, epochs, len(train))
            lr = self.optimizer.param_groups[0]["lr"]
            epoch_start = time.perf_counter()
            stats = self.train_epoch(train)
            val_stats = self.validate(val)
            epoch_time = time.perf_counter() - epoch_start
            self.epoch += 1
            self.train_time_s += epoch_time
            improved = self.best_val_acc is None or val_stats["acc"] > self.best_val_acc
            if improved:
                self.best_val_acc = val_stats["acc"]
            metrics = {
                "train/loss": stats["loss"], "train/acc": stats["acc"], "val/loss": val_stats["loss"],
                "val/acc": val_stats["acc"], "lr": lr, "throughput/images_per_s": stats["images_per_s"],
                "time/epoch_s": epoch_time,
            }
            if self.checkpoints is not None:
                self.checkpoints.save(self.state_dict(), best=improved)
            self.tracker.epoch_ended(self.epoch, metrics)
        return FitResult(self.best_val_acc or 0.0, self.epoch, self.train_time_s)

    def state_dict(self) -> dict:
        model = getattr(self.model, "_orig_mod", self.model)  # unwrap torch.compile
        return {
            "model": model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": self.epoch,
            "global_step": self.global_step, "best_val_acc": self.best_val_acc, "train_time_s": self.train_time_s,
        }
