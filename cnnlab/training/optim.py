"""Optimizer construction: parameter groups with and without weight decay, and per-part learning rates."""

from collections.abc import Callable

from torch import nn
from torch.optim import Optimizer

from cnnlab.errors import UserError


def decay_groups(params: list[nn.Parameter], no_decay_norm_bias: bool) -> list[dict]:
    """Split parameters so that norm weights and biases (1-D tensors) skip weight decay when asked."""
    if not no_decay_norm_bias:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def parameter_groups(parts: list[tuple[list[nn.Parameter], float]], lr: float, no_decay_norm_bias: bool) -> list[dict]:
    """Groups for (parameters, lr factor) parts; a part's learning rate is lr x its factor (schedules scale it)."""
    groups = []
    for params, factor in parts:
        for group in decay_groups(params, no_decay_norm_bias):
            if group["params"]:
                groups.append(group if factor == 1.0 else {**group, "lr": lr * factor})
    return groups


def build_optimizer(factory: Callable[..., Optimizer], groups: list[dict]) -> Optimizer:
    """The optimizer; torch's own checks of its settings (momentum < 0, betas outside [0, 1)) become a UserError."""
    try:
        return factory(groups)
    except (ValueError, TypeError) as e:
        hint = " (or optimizer.nesterov=false)" if "Nesterov" in str(e) else ""
        raise UserError(f"the optimizer refused its settings ({e}); fix the optimizer.* overrides{hint}") from e
