"""Optimizer construction: parameter groups with and without weight decay."""

from collections.abc import Callable

from torch import nn
from torch.optim import Optimizer

from cnnlab.errors import UserError


def parameter_groups(model: nn.Module, no_decay_norm_bias: bool) -> list[dict]:
    """Split parameters so that norm weights and biases (1-D tensors) skip weight decay when asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(factory: Callable[..., Optimizer], model: nn.Module, no_decay_norm_bias: bool) -> Optimizer:
    """The optimizer; torch's own checks of its settings (momentum < 0, betas outside [0, 1)) become a UserError."""
    try:
        return factory(parameter_groups(model, no_decay_norm_bias))
    except (ValueError, TypeError) as e:
        hint = " (or optimizer.nesterov=false)" if "Nesterov" in str(e) else ""
        raise UserError(f"the optimizer refused its settings ({e}); fix the optimizer.* overrides{hint}") from e
