"""Transfer learning: which parameters train (`trainer.finetune`), and starting from another run (`init_from=`).

full      everything trains (the backbone at lr x trainer.backbone_lr_factor)
head      only the classifier trains; the backbone's weights and BatchNorm statistics stay as loaded
gradual   the head alone for trainer.head_epochs epochs, then everything (fastai's fine_tune)
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.checkpoints.store import load_checkpoint
from cnnlab.models.pretrained import last_linear
from cnnlab.run_folder import TRAINED_WEIGHTS, find_checkpoint

log = logging.getLogger("cnnlab")


def head_module(model: nn.Module) -> nn.Module:
    """The classifier: cnnlab's models name it `head`; other networks end with a linear layer."""
    head = getattr(model, "head", None)
    return head if isinstance(head, nn.Module) else last_linear(model)[1]


@dataclass
class Finetune:
    mode: str = "full"
    head_epochs: int = 1  # gradual: epochs that train the head alone
    backbone_lr_factor: float = 1.0  # the backbone's learning rate as a multiple of lr

    def backbone_frozen(self, epoch: int) -> bool:
        return self.mode == "head" or (self.mode == "gradual" and epoch < self.head_epochs)

    def split(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(head parameters, backbone parameters)."""
        head = {id(p) for p in head_module(model).parameters()}
        params = list(model.parameters())
        return [p for p in params if id(p) in head], [p for p in params if id(p) not in head]

    def trained_parameters(self, model: nn.Module) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, lr factor) for the optimizer: head-only runs never hold the backbone; a gradual run
        holds it from the start (without gradients it is not updated), so its schedule covers it."""
        if self.mode == "full" and self.backbone_lr_factor == 1.0:
            return [(list(model.parameters()), 1.0)]  # one part: the groups (and checkpoints) of a plain run
        head, backbone = self.split(model)
        return [(head, 1.0)] if self.mode == "head" else [(head, 1.0), (backbone, self.backbone_lr_factor)]

    def apply(self, model: nn.Module, epoch: int) -> None:
        """Freeze or unfreeze the backbone for `epoch` (after model.train(): frozen BatchNorm layers keep
        their running statistics in eval mode)."""
        frozen = self.backbone_frozen(epoch)
        _, backbone = self.split(model)
        for p in backbone:
            p.requires_grad_(not frozen)
        if frozen:
            head_modules = set(head_module(model).modules())
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head_modules:
                    module.eval()
        if self.mode == "gradual" and epoch == self.head_epochs:
            log.info("epoch %d: the whole network trains from now on (trainer.finetune=gradual)", epoch + 1)


def init_from(model: nn.Module, target: str | Path) -> dict[str, int]:
    """Start from an earlier run's weights: tensors with the same name and shape are loaded, the others keep
    their fresh initialisation (a head for another number of classes, layers the run did not have)."""
    path = find_checkpoint(target, TRAINED_WEIGHTS)
    state: dict[str, torch.Tensor] = load_checkpoint(path)["model"]
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [
        f"{k} (shape {tuple(v.shape)} there, {tuple(own[k].shape)} here)" if k in own else f"{k} (not in this model)"
        for k, v in state.items()
        if k not in loaded
    ]
    fresh = [k for k in own if k not in loaded]
    model.load_state_dict(loaded, strict=False)
    log.info(
        "init_from %s: loaded %d of this model's %d tensors; skipped %d%s; %d keep their fresh initialisation%s",
        path,
        len(loaded),
        len(own),
        len(skipped),
        f" ({'; '.join(skipped[:3])})" if skipped else "",
        len(fresh),
        f" ({', '.join(fresh[:3])})" if fresh else "",
    )
    return {"loaded": len(loaded), "skipped": len(skipped), "fresh": len(fresh)}
