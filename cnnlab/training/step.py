"""The one training step: the loop, the time-budget probe and `cnnlab bench` all train through it.

Each of them measuring or taking its own step let them drift apart (a probe in fp32 planning a run
that trains in bf16); with one class, what is timed is what is trained.
"""

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.device import autocast
from cnnlab.training.averaging import WeightAverage


class TrainStep:
    """Forward under the run's autocast, loss, backward through the grad scaler, optimizer and schedule step.

    The scaler only acts for float16 (bfloat16 and fp32 need no loss scaling); its state is part of a
    checkpoint. Gradient clipping belongs between `backward` and `update`; weight averaging (`averaging`, the
    copy validation uses) is updated at the end of `update`, after the weights moved.
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
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.amp_dtype = amp_dtype
        self.scheduler = scheduler
        self.averaging = averaging
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast(self.device, self.amp_dtype):
            logits = self.model(images)
            return self.loss_fn(logits, labels), logits

    def backward(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()

    def update(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.averaging is not None:
            self.averaging.after_step()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; returns the batch's loss and logits, detached."""
        loss, logits = self.forward(images, labels)
        self.backward(loss)
        self.update()
        return loss.detach(), logits.detach()
