"""Optimizer construction: parameter groups with and without weight decay, and per-part learning rates."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.optim import Optimizer

from cnnlab.errors import UserError

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def decay_groups(params: list[nn.Parameter], no_decay_norm_bias: bool) -> list[dict]:
    """Split parameters so that norm weights and biases (1-D tensors) skip weight decay when asked."""
    if not no_decay_norm_bias:
        return [{"params": params}]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


@dataclass(frozen=True)
class BiasLR:
    """`trainer.bias_lr_factor`: the shifts of normalisation layers (BatchNorm's biases) train at lr x factor, and
    their weight decay is divided by the factor, so that lr x weight decay - the shrinkage per step of SGD and
    AdamW - stays what it is for the other parameters (a group exempt from decay stays exempt). Only norm shifts:
    they act on unit-variance activations, so a large step moves a threshold, while the same step on the head's
    bias or an unnormalised conv's bias moves the logits themselves and diverges."""

    ids: frozenset[int]  # id() of the model's normalisation-layer biases
    factor: float
    weight_decay: float  # the optimizer's, for groups that do not set their own

    @classmethod
    def of(cls, model: nn.Module, factor: float, weight_decay: float) -> "BiasLR":
        norms = (m for m in model.modules() if isinstance(m, NORM_LAYERS))
        biases = (m.bias for m in norms if isinstance(m.bias, nn.Parameter))
        return cls(frozenset(map(id, biases)), factor, weight_decay)

    def split(self, group: dict) -> list[tuple[dict, float]]:
        """(group, lr factor) pairs: `group` whole when the factor is 1, else its biases apart from the rest."""
        if self.factor == 1.0:
            return [(group, 1.0)]
        biases = [p for p in group["params"] if id(p) in self.ids]
        rest = [p for p in group["params"] if id(p) not in self.ids]
        decay = group.get("weight_decay", self.weight_decay) / self.factor
        return [({**group, "params": rest}, 1.0), ({**group, "params": biases, "weight_decay": decay}, self.factor)]


def parameter_groups(
    parts: list[tuple[list[nn.Parameter], float]], lr: float, no_decay_norm_bias: bool, bias_lr: BiasLR | None = None
) -> list[dict]:
    """Groups for (parameters, lr factor) parts; a part's learning rate is lr x its factor (x bias_lr's factor for
    its biases); schedules scale every group's."""
    groups = []
    for params, factor in parts:
        for group in decay_groups(params, no_decay_norm_bias):
            for sub, bias_factor in bias_lr.split(group) if bias_lr is not None else [(group, 1.0)]:
                if sub["params"]:
                    total = factor * bias_factor
                    groups.append(sub if total == 1.0 else {**sub, "lr": lr * total})
    return groups


def build_optimizer(factory: Callable[..., Optimizer], groups: list[dict]) -> Optimizer:
    """The optimizer; torch's own checks of its settings (momentum < 0, betas outside [0, 1)) become a UserError."""
    try:
        return factory(groups)
    except (ValueError, TypeError) as e:
        hint = " (or optimizer.nesterov=false)" if "Nesterov" in str(e) else ""
        raise UserError(f"the optimizer refused its settings ({e}); fix the optimizer.* overrides{hint}") from e
