"""`optimizer=muon`: Muon for the hidden layers' weight matrices, Nesterov SGD for every other parameter, as one
optimizer.

Muon (torch.optim.Muon: momentum orthogonalised by Newton-Schulz iterations) takes only 2-D parameters, so a
convolution's filters reach it as a matrix, out_channels x (in_channels * kh * kw), that shares the filters'
memory: Muon's in-place update is the filters' update. The loop, the schedule, the grad scaler and the
checkpoints see one optimizer whose param_groups hold the real parameters and their learning rates; those
are copied into the two inner optimizers before each step, so the schedule scales both parts.

torch.optim.Muon orthogonalises in bfloat16, which CPUs without bfloat16 units multiply 10-25x slower than
float32: on such a core its step took 45% of a 33 M-MAC network's training step. `Muon` below is the same
algorithm with the orthogonalisation in bfloat16 on CUDA only and in float32 elsewhere.
"""

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Optimizer

MUON = "muon"  # the param-group key that hands a group's parameters to Muon
MATRIX_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # layers whose weight is a matrix (of filters)


def hidden_matrices(model: nn.Module, head: nn.Module) -> set[int]:
    """ids of the convolution filters and linear weights outside the classifier head: the parameters Muon trains
    (the head maps features to classes, which Muon's equal-singular-value update does not suit)."""
    head_params = {id(p) for p in head.parameters()}
    return {
        id(layer.weight)
        for layer in model.modules()
        if isinstance(layer, MATRIX_LAYERS) and id(layer.weight) not in head_params
    }


def with_muon_groups(groups: list[dict], matrices: set[int]) -> list[dict]:
    """Each param group split in two: its hidden matrices (marked for Muon) and the rest, empty parts dropped."""
    split = []
    for group in groups:
        for to_muon in (False, True):
            params = [p for p in group["params"] if (id(p) in matrices) == to_muon]
            if params:
                split.append({**group, "params": params, MUON: to_muon})
    return split


def column_order(param: torch.Tensor) -> tuple[int, ...]:
    """The order in which `param`'s dimensions after the first lie in memory, so that its matrix is a view:
    in, kh, kw for contiguous filters; kh, kw, in for channels_last ones."""
    rest = tuple(range(1, param.ndim))
    for order in (rest, rest[1:] + rest[:1]):
        if param.permute(0, *order).is_contiguous():
            return order
    raise ValueError(f"a parameter of shape {tuple(param.shape)} and strides {param.stride()} has no matrix view")


def as_matrix(tensor: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """`tensor` as rows (its first dimension) x columns (the others, in `order`); a view where the layout allows."""
    return tensor.permute(0, *order).reshape(tensor.shape[0], -1)


def matrix_view(param: nn.Parameter) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A 2-D tensor sharing `param`'s memory (writing it writes the parameter), and its column order."""
    order = column_order(param)
    return param.detach().permute(0, *order).view(param.shape[0], -1), order


def closure_loss(closure: Any) -> Any:
    """What an optimizer step's closure returns, evaluated with gradients on; None without a closure."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def orthogonalise(
    update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iterations, which push every singular value of `update` towards 1,
    in bfloat16 on CUDA (fast there) and in at least float32 elsewhere; the result has `update`'s dtype."""
    a, b, c = coefficients
    x = update.to(torch.bfloat16 if update.is_cuda else torch.promote_types(update.dtype, torch.float32))
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # iterate on the smaller Gram matrix
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(update.dtype)


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same settings, state and checkpoints) whose orthogonalisation runs in float32 off CUDA.

    Only the default learning-rate adjustment is supported: lr x sqrt(max(1, rows / columns)).
    `normalize_weights=True` rescales each matrix to a Frobenius norm of sqrt(rows) before its step (every row,
    one filter, of mean square norm 1), as the fast CIFAR-10 recipes do. Behind BatchNorm a filter's scale does not
    change the function, only how far a step of fixed size moves it; held fixed, the learning rate alone sets the
    relative step, where otherwise the weights' growth lowers it unseen.
    """

    def __init__(self, params: Iterable[Any], normalize_weights: bool = False, **settings: Any) -> None:
        super().__init__(params, **settings)
        self.defaults["normalize_weights"] = normalize_weights
        for group in self.param_groups:
            group.setdefault("normalize_weights", normalize_weights)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure_loss(closure)
        for group in self.param_groups:
            if group["adjust_lr_fn"] not in (None, "original"):
                raise ValueError(f"adjust_lr_fn={group['adjust_lr_fn']!r} is not supported")
            for param in group["params"]:
                if param.grad is None:
                    continue
                momentum, grad = group["momentum"], param.grad
                buffer = self.state[param].setdefault("momentum_buffer", torch.zeros_like(grad))
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                rows, columns = param.shape
                if group.get("normalize_weights", False):  # absent in checkpoints from before the option
                    param.mul_(math.sqrt(rows) / param.norm().clamp(min=group["eps"]))
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(update, alpha=-group["lr"] * math.sqrt(max(1.0, rows / columns)))
        return loss


class MuonWithSGD(Optimizer):
    """Muon over the param groups marked `muon` (as matrix views), torch.optim.SGD over the others.

    `lr` is SGD's learning rate; a Muon group's learning rate is `muon_lr` times the group's own factor
    (a group with lr = 0.1 x lr gets 0.1 x muon_lr). Weight decay follows each optimizer's own rule: added to
    SGD's gradient, decoupled in Muon (each step multiplies the matrices by 1 - Muon's lr x weight_decay).
    SGD's groups come first, so param_groups[0]["lr"] is SGD's learning rate.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        muon_lr: float,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        muon_momentum: float = 0.95,
        muon_normalize_weights: bool = False,
    ) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        groups = sorted(groups, key=lambda group: bool(group.get(MUON)))  # SGD's part first
        groups = [{**g, "lr": muon_lr * g["lr"] / lr if "lr" in g else muon_lr} if g.get(MUON) else g for g in groups]
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay, MUON: False})
        sgd_groups = [{"params": g["params"]} for g in self.param_groups if not g[MUON]]
        self._matrices = {p: matrix_view(p) for g in self.param_groups if g[MUON] for p in g["params"]}
        muon_groups = [{"params": [self._matrices[p][0] for p in g["params"]]} for g in self.param_groups if g[MUON]]
        self._parts: list[Optimizer] = []
        if sgd_groups:
            self._parts.append(SGD(sgd_groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))
        if muon_groups:
            muon = Muon(
                muon_groups,
                normalize_weights=muon_normalize_weights,
                lr=muon_lr,
                momentum=muon_momentum,
                weight_decay=weight_decay,
            )
            self._parts.append(muon)

    def _inner_groups(self) -> list[dict]:
        return [group for part in self._parts for group in part.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Copy each group's learning rate and weight decay inward, hand Muon the gradients as matrices, step both."""
        loss = closure_loss(closure)
        for outer, inner in zip(self.param_groups, self._inner_groups(), strict=True):
            inner["lr"], inner["weight_decay"] = outer["lr"], outer["weight_decay"]
        for param, (view, order) in self._matrices.items():
            view.grad = None if param.grad is None else as_matrix(param.grad, order)
        for part in self._parts:
            part.step()
        for view, _ in self._matrices.values():
            view.grad = None  # the next backward makes new gradients; do not hold the old ones
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The groups' settings (what the schedule reads and writes) and both optimizers' momentum buffers."""
        return {**super().state_dict(), "parts": [part.state_dict() for part in self._parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({"state": state_dict["state"], "param_groups": state_dict["param_groups"]})
        for part, state in zip(self._parts, state_dict["parts"], strict=True):
            part.load_state_dict(state)
