"""The one training step: the loop, the time-budget probe and `cnnlab bench` all train through it.

Each of them measuring or taking its own step let them drift apart (a probe in fp32 planning a run
that trains in bf16); with one class, what is timed is what is trained.
"""

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.device import autocast
from cnnlab.training.averaging import WeightAverage

# Mixes a batch (MixUp / CutMix): images and integer labels in, mixed images and soft targets out
BatchMix = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def unwrapped(model: nn.Module) -> nn.Module:
    """The model itself, out of torch.compile's and DistributedDataParallel's wrappers (each prefixes every state
    key, so checkpoints, averaging and histograms work on what is inside)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


class TrainStep:
    """Forward under the run's autocast, loss, backward through the grad scaler, optimizer and schedule step.

    One call is one optimizer step on one batch. With `accumulate` > 1 the batch is cut into that many
    micro-batches, each forwarded and backpropagated on its own (activations of one micro-batch at a time), their
    gradients summed with weights that make the step the same as on the whole batch. `clip_grad_norm` rescales
    the summed gradients to at most that global norm before the update; `mix` (MixUp / CutMix) mixes each
    micro-batch and trains on soft targets. The scaler only acts for float16 (bfloat16 and fp32 need no loss
    scaling); its state is part of a checkpoint. Weight averaging (`averaging`, the copy validation uses) is
    updated after the weights moved.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loss_fn: nn.Module,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        scheduler: LRScheduler | None = None,
        averaging: WeightAverage | None = None,
        clip_grad_norm: float | None = None,
        accumulate: int = 1,
        mix: BatchMix | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.amp_dtype = amp_dtype
        self.scheduler = scheduler
        self.averaging = averaging
        self.clip_grad_norm = clip_grad_norm
        self.accumulate = accumulate
        self.mix = mix
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def _forward_backward(
        self, images: torch.Tensor, labels: torch.Tensor, share: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of one micro-batch; its gradients, scaled by its `share` of the batch, are added."""
        targets = labels
        if self.mix is not None:
            images, targets = self.mix(images, labels)
        with autocast(self.device, self.amp_dtype):
            logits = self.model(images)
            loss = self.loss_fn(logits, targets)
        self.scaler.scale(loss * share if share != 1 else loss).backward()
        return loss.detach(), logits.detach()

    def update(self) -> None:
        if self.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the float16-scaled ones
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.averaging is not None:
            self.averaging.after_step()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch (one optimizer step); returns the batch's loss and logits, detached."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.accumulate == 1:
            loss, logits = self._forward_backward(images, labels, 1.0)
            self.update()
            return loss, logits
        total = labels.shape[0]
        losses, outputs = [], []
        parts = list(zip(images.chunk(self.accumulate), labels.chunk(self.accumulate)))
        for index, (part_images, part_labels) in enumerate(parts):
            share = part_labels.shape[0] / total
            # data-parallel: the gradients are averaged over the processes once, after the last micro-batch
            deferred = index < len(parts) - 1 and hasattr(self.model, "no_sync")
            with self.model.no_sync() if deferred else contextlib.nullcontext():
                loss, logits = self._forward_backward(part_images, part_labels, share)
            losses.append(loss.float() * share)
            outputs.append(logits)
        self.update()
        return torch.stack(losses).sum(), torch.cat(outputs)
