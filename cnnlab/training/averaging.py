"""Weight averaging (`trainer.weight_averaging`): an averaged copy of the model, which validation, test and the
checkpoints' "model" weights use.

ema        every ema_every steps: average <- decay x average + (1 - decay) x training weights, the decay
           ramping up to ema_decay as min(ema_decay, (1 + n) / (10 + n)) over the n updates so far, so that
           the first weights (a random initialisation) do not dominate a short run's average
lookahead  every lookahead_steps steps: the slow weights move lookahead_alpha of the way to the training
           weights, and the training weights restart from them (Lookahead, Zhang et al. 2019)

The EMA averages the buffers as well as the parameters, so that BatchNorm's running statistics belong to the
weights they are used with. Lookahead is a rule for the parameters only: BatchNorm's statistics keep following
the training weights, which equal the slow ones after every pull. Both start from the weights training starts
from.
"""

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

WARMUP = 10  # the EMA's decay is (1 + n) / (WARMUP + n) until that exceeds ema_decay (TensorFlow's num_updates)


class WeightAverage:
    """An exponential moving average of `model`, updated every `every` steps (its decay ramped up over the first
    updates with `warmup`). It averages parameters and buffers; with `pull_back` (Lookahead's slow weights) it
    averages the parameters, copies the buffers, and sets the model's parameters to the average at each update."""

    def __init__(
        self, model: nn.Module, decay: float, every: int, warmup: bool = False, pull_back: bool = False
    ) -> None:
        self.source = model
        self.decay = decay
        self.every = every
        self.warmup = warmup
        self.pull_back = pull_back
        self.steps = 0  # training steps seen; the average is updated when it reaches a multiple of `every`
        # n_averaged stays on the CPU (no device argument): reading it costs no device sync
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=not pull_back)
        self.averaged.update_parameters(model)  # the first update copies: the average starts at the model

    def current_decay(self) -> float:
        """The decay of the next update: `decay`, or while warming up the smaller (1 + n) / (WARMUP + n)."""
        n = int(self.averaged.n_averaged)
        return min(self.decay, (1 + n) / (WARMUP + n)) if self.warmup else self.decay

    def _average(self, averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        get_ema_multi_avg_fn(self.current_decay())(averaged, current, n_averaged)

    @property
    def module(self) -> nn.Module:
        """The averaged network (the model's architecture, uncompiled)."""
        return self.averaged.module

    @torch.no_grad()
    def after_step(self) -> None:
        """Count one optimizer step; every `every` steps, average (and with `pull_back`, reset the model to it)."""
        self.steps += 1
        if self.steps % self.every:
            return
        self.averaged.update_parameters(self.source)
        if self.pull_back:
            for fast, slow in zip(self.source.parameters(), self.module.parameters(), strict=True):
                fast.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        """The counters; the averaged weights themselves are the checkpoint's "model"."""
        return {"steps": self.steps, "n_averaged": int(self.averaged.n_averaged)}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(weights)
        self.steps = int(state["steps"])
        self.averaged.n_averaged.fill_(int(state["n_averaged"]))
