"""The config's model, optimizer, loss and training step, built one way for training, evaluation, the
time-budget probe, `cnnlab bench` and the benchmarks."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.device import autocast_dtype
from cnnlab.training.finetune import Finetune
from cnnlab.training.optim import build_optimizer, parameter_groups
from cnnlab.training.step import TrainStep


def build_model(cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The configured model (on the CPU) for inputs of `input_shape` (channels, height, width)."""
    channels, height, width = input_shape
    return instantiate(cfg.model, in_channels=channels, num_classes=num_classes, image_size=[height, width])


def configured_finetune(cfg: DictConfig) -> Finetune:
    trainer = cfg.trainer
    return Finetune(trainer.finetune, trainer.head_epochs, trainer.backbone_lr_factor)


def configured_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """The configured optimizer over the parameters `trainer.finetune` trains, norm weights and biases exempt
    from decay when asked."""
    parts = configured_finetune(cfg).trained_parameters(model)
    return build_optimizer(instantiate(cfg.optimizer), parameter_groups(parts, cfg.lr, cfg.trainer.no_decay_norm_bias))


def configured_loss(cfg: DictConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)


def configured_step(
    cfg: DictConfig,
    model: nn.Module,
    device: torch.device,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
) -> TrainStep:
    """The run's training step over `model`: its loss and its autocast setting (`trainer.amp` on `device`).

    Without `optimizer`, a fresh configured one (what the probe and bench want: the run's state stays untouched).
    """
    return TrainStep(
        model,
        optimizer or configured_optimizer(cfg, model),
        configured_loss(cfg),
        device=device,
        amp_dtype=autocast_dtype(device, cfg.trainer.amp),
        scheduler=scheduler,
    )
