"""A trained model rebuilt from its checkpoint alone: the network, its classes and its input pipeline.

Checkpoints carry a data card (class names, input shape, normalisation), so predicting or exporting
needs no training data. Checkpoints written before the card existed still load: their data set is
read once to recover it.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.checkpoints.store import load_checkpoint
from cnnlab.checkpoints.trust import check_config_code
from cnnlab.device import autocast_dtype
from cnnlab.errors import UserError
from cnnlab.run_folder import TRAINED_WEIGHTS, find_checkpoint
from cnnlab.training.components import build_model

log = logging.getLogger("cnnlab")


@dataclass
class TrainedModel:
    """The network in eval mode on its device, with what it expects as input and what its outputs mean."""

    model: nn.Module
    classes: list[str]
    input_shape: tuple[int, int, int]  # channels, height, width
    mean: list[float]
    std: list[float]
    path: Path  # the checkpoint file
    epoch: int
    config: DictConfig  # the run's config, as stored in the checkpoint
    device: torch.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.device, self.config.trainer.amp)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.trainer.channels_last else torch.contiguous_format

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW images of the input shape -> the float batch the model was trained on."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return ((images.float() / 255 - mean) / std).contiguous(memory_format=self.memory_format)

    def card(self) -> dict[str, Any]:
        return {"classes": self.classes, "input_shape": list(self.input_shape), "mean": self.mean, "std": self.std}


def data_card_of(checkpoint: dict[str, Any], run_cfg: DictConfig, path: Path) -> dict[str, Any]:
    """The checkpoint's data card, or (older checkpoints) the one its data set gives on this machine."""
    if isinstance(checkpoint.get("data"), dict):
        return checkpoint["data"]
    from cnnlab.data.build import build_data
    from cnnlab.inference.local_data import with_local_data_settings

    log.info("%s predates the classes and normalisation in checkpoints: reading them from its data set", path)
    dataset = with_local_data_settings(run_cfg.dataset)
    return build_data(dataset, 1, 1, torch.device("cpu"), int(run_cfg.seed), False).card()


def load_trained(target: str | Path, device: torch.device, trust_code: bool = False) -> TrainedModel:
    """The checkpoint a user means (a run folder: its best.pt, else last.pt; or a .pt file), rebuilt on `device`."""
    path = find_checkpoint(target, TRAINED_WEIGHTS)
    checkpoint = load_checkpoint(path)
    check_config_code(checkpoint["config"], path, trust_code)
    run_cfg = OmegaConf.create(checkpoint["config"])
    card = data_card_of(checkpoint, run_cfg, path)
    input_shape = tuple(int(v) for v in card["input_shape"])
    model = build_model(run_cfg, input_shape, len(card["classes"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:160]
        raise UserError(
            f"checkpoint {path} holds weights of another model than its config describes ({detail}); "
            "use the checkpoint written by the run that trained it"
        ) from e
    trained = TrainedModel(
        model,
        list(card["classes"]),
        input_shape,
        [float(v) for v in card["mean"]],
        [float(v) for v in card["std"]],
        path,
        int(checkpoint["epoch"]),
        run_cfg,
        device,
    )
    model.to(device, memory_format=trained.memory_format).eval()
    return trained
