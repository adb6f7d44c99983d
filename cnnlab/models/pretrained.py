"""Backbones from torchvision, their classifier head replaced for the data set's classes (transfer learning).

    model=torchvision model.name=resnet18 model.weights=DEFAULT

torchvision is imported only when such a model is built: its import costs over a second.
"""

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import UserError

log = logging.getLogger("cnnlab")
NO_WEIGHTS = ("none", "None", "null", "")


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: the last nn.Linear the network registers (fc, classifier[-1], heads.head, ...)."""
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise UserError("this model has no linear classifier layer to replace; choose another model.name")
    return linears[-1]


def _replace_head(model: nn.Module, num_classes: int) -> None:
    name, old = last_linear(model)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, nn.Linear(old.in_features, num_classes))


def _torch_cache() -> str:
    return os.environ.get("TORCH_HOME", str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"))


def _from_torchvision(name: str, weights: str) -> nn.Module:
    """torchvision's network with its named pretrained weights (downloaded once into the torch cache)."""
    import torchvision

    try:
        chosen = torchvision.models.get_model_weights(name)[weights]
    except KeyError:
        members = ", ".join(torchvision.models.get_model_weights(name).__members__)
        raise UserError(
            f"model.weights={weights!r} is not one of {name}'s weights ({members}); use DEFAULT, none, "
            "or a path to a state dict"
        ) from None
    log.info("model: %s with weights %s (downloaded once into %s)", name, chosen, _torch_cache())
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # torch.hub writes its own line; the log says it above
            return torchvision.models.get_model(name, weights=chosen)
    except (OSError, RuntimeError) as e:  # urllib's URLError is an OSError; a broken download a RuntimeError
        reason = str(getattr(e, "reason", e)).splitlines()[0][:100]
        raise UserError(
            f"model.weights={weights}: {name}'s weights could not be downloaded ({reason}); torch keeps downloaded "
            f"weights in {_torch_cache()}/hub/checkpoints, and model.weights=<path to a state dict> takes a local file"
        ) from e


def is_weights_file(weights: str) -> bool:
    return weights.endswith((".pt", ".pth", ".safetensors")) or "/" in weights or os.sep in weights


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict file, read without running code: torch.save's format (weights only) or safetensors."""
    if not path.is_file():
        raise UserError(f"model.weights={path} is not a file; use DEFAULT, none, or a path to a state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise UserError(f"model.weights={path}: reading .safetensors needs the safetensors package") from None
    except Exception as e:  # noqa: BLE001 - loaders fail in many ways on foreign bytes
        raise UserError(f"model.weights={path} is not a readable state dict ({str(e).splitlines()[0][:100]})") from e
    return state if isinstance(state, dict) else {}


def load_body(model: nn.Module, heads: tuple[str, ...], path: Path, name: str) -> None:
    """Load every tensor of a state dict file into `model` except its classifier (`heads`, replaced after)."""
    state = _read_state_dict(path)
    expected = model.state_dict()

    def is_head(key: str) -> bool:
        return any(key.startswith(head + ".") for head in heads)

    body = {k: v for k, v in state.items() if not is_head(k)}
    wrong = [k for k, v in body.items() if k not in expected or getattr(v, "shape", None) != expected[k].shape]
    missing = [k for k in expected if k not in body and not is_head(k)]
    if not body or wrong or missing:
        example = (wrong or missing or ["(no tensors)"])[0]
        raise UserError(
            f"model.weights={path} does not hold {name}'s weights ({len(wrong)} unexpected and {len(missing)} "
            f"missing tensors, e.g. {example}); save them with torch.save(model.state_dict(), path)"
        )
    model.load_state_dict(body, strict=False)


class TorchvisionModel(nn.Module):
    """Any torchvision classification network (resnet18, mobilenet_v3_small, efficientnet_b0, convnext_tiny, ...),
    with random, torchvision's pretrained or a local file's weights, and a new head for `num_classes`."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        name: str = "resnet18",
        weights: Any = "DEFAULT",
    ) -> None:
        super().__init__()
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            raise UserError(
                f"model.name={name!r} is not a torchvision classification model; for example resnet18, "
                "mobilenet_v3_small, efficientnet_b0, convnext_tiny (all of them: torchvision.models.list_models())"
            )
        if in_channels != 3:
            raise UserError(
                f"model=torchvision needs RGB images and these have {in_channels} channel(s); "
                "use dataset.source.channels=3 where the data set has it"
            )
        weights = "none" if weights is None else str(weights)
        if weights in NO_WEIGHTS:
            self.backbone = torchvision.models.get_model(name, weights=None)
        elif is_weights_file(weights):
            self.backbone = torchvision.models.get_model(name, weights=None)
            load_body(self.backbone, (last_linear(self.backbone)[0],), Path(weights).expanduser(), name)
        else:
            self.backbone = _from_torchvision(name, weights)
        _replace_head(self.backbone, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
