"""Backbones from timm (an optional extra), built for the data set's classes and channels (transfer learning).

    model=timm model.name=convnext_nano model.weights=DEFAULT

timm's own API does the adapting: `num_classes` makes a new classifier and `in_chans` adapts the first
layer to grayscale. timm is imported only when such a model is built.
"""

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from cnnlab.data.statistics import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.errors import UserError, timm_missing
from cnnlab.models.pretrained import NO_WEIGHTS, is_weights_file, load_body

log = logging.getLogger("cnnlab")


def import_timm() -> ModuleType:
    try:
        import timm
    except ImportError:
        raise timm_missing() from None
    return timm


def _hub_cache() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return HF_HUB_CACHE


def _cached_weights(timm: ModuleType, name: str) -> str | None:
    """The already downloaded Hub file of `name`'s pretrained weights, if there is one."""
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(name)
    if config is None or not config.hf_hub_id:
        return None
    for filename in (config.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(config.hf_hub_id, filename) if filename else None
        if isinstance(path, str):
            return path
    return None


def _unreachable(url: str) -> str | None:
    """Why `url` does not answer within seconds (None when it answers, with any HTTP status); proxies from the
    environment are used, as the download would use them."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:
        return str(getattr(e, "reason", e))
    return None


class TimmModel(nn.Module):
    """Any timm network (resnet18, convnext_nano, efficientnet_b0, vit_tiny_patch16_224, or a tagged name such
    as resnet18.a1_in1k), with random, timm's pretrained or a local file's weights, and a new classifier.

    Its inputs arrive normalised as `input_normalization` says; when the pretrained weights expect other
    statistics (many ViTs use 0.5/0.5), the first operation maps one to the other exactly.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        name: str = "resnet18",
        weights: Any = "DEFAULT",
        input_normalization: str = "imagenet",
    ) -> None:
        super().__init__()
        timm = import_timm()
        if not timm.is_model(name):
            raise UserError(
                f"model.name={name!r} is not a timm model; for example resnet18, convnext_nano, efficientnet_b0 "
                "(all of them: timm.list_models())"
            )
        weights = "none" if weights is None else str(weights)
        common = {"in_chans": in_channels}
        if weights in NO_WEIGHTS:
            self.backbone = timm.create_model(name, pretrained=False, num_classes=num_classes, **common)
        elif is_weights_file(weights):
            self.backbone = timm.create_model(name, pretrained=False, **common)
            heads = self.backbone.pretrained_cfg.get("classifier") or ()
            load_body(
                self.backbone, (heads,) if isinstance(heads, str) else tuple(heads), Path(weights).expanduser(), name
            )
            self.backbone.reset_classifier(num_classes)
        elif weights == "DEFAULT":
            self.backbone = self._pretrained(timm, name, num_classes, common)
        else:
            raise UserError(
                f"model.weights={weights!r} is not valid for model=timm: use DEFAULT, none, or a path to a state "
                "dict; pick other pretrained weights with a tagged name, such as model.name=resnet18.a1_in1k"
            )
        config = self.backbone.pretrained_cfg
        if config.get("fixed_input_size") and list(config["input_size"][1:]) != list(image_size):
            raise UserError(
                f"model.name={name} takes only {config['input_size'][1]}x{config['input_size'][2]} inputs and these "
                f"are {image_size[0]}x{image_size[1]}: set dataset.input_size={config['input_size'][1]}"
            )
        mean, std = config.get("mean"), config.get("std")
        self._remap_inputs(input_normalization, mean, std, in_channels)

    @staticmethod
    def _pretrained(timm: ModuleType, name: str, num_classes: int, common: dict[str, Any]) -> nn.Module:
        """timm's pretrained weights: from the Hub cache when already downloaded (no network at all), else
        downloaded, after a quick check that the Hub answers (its client retries for about a minute)."""
        cached = _cached_weights(timm, name)
        if cached is not None:
            log.info("model: timm's %s with its pretrained weights from %s", name, cached)
            overlay = {"file": cached}
        else:
            from huggingface_hub.constants import ENDPOINT

            if (reason := _unreachable(ENDPOINT)) is not None:
                raise UserError(
                    f"model.weights=DEFAULT: timm's {name} weights could not be downloaded ({ENDPOINT}: {reason}); "
                    f"downloaded weights are kept in {_hub_cache()}, and model.weights=<path to a state dict> takes "
                    "a local file"
                )
            log.info("model: timm's %s with its pretrained weights (downloaded once into %s)", name, _hub_cache())
            overlay = {}
        try:
            return timm.create_model(
                name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay, **common
            )
        except (OSError, RuntimeError, ValueError) as e:  # the Hub's errors are OSErrors; a bad file a RuntimeError
            reason = str(e).split(". ")[0].splitlines()[0][:160]
            raise UserError(
                f"model.weights=DEFAULT: timm's {name} weights could not be loaded ({reason}); downloaded weights "
                f"are kept in {_hub_cache()}, and model.weights=<path to a state dict> takes a local file"
            ) from e

    def _remap_inputs(self, normalization: str, mean: Any, std: Any, channels: int) -> None:
        """Inputs normalised with ImageNet's statistics, for weights trained with others: x' = x * scale + shift."""
        remap = normalization == "imagenet" and channels == 3 and mean is not None and std is not None
        remap = remap and (tuple(mean), tuple(std)) != (IMAGENET_MEAN, IMAGENET_STD)
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std) if remap else torch.ones(3)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std) if remap else torch.zeros(3)
        self.remap = remap
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.remap:
            x = x * self.input_scale + self.input_shift
        return self.backbone(x)
