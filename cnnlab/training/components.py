"""The config's model, optimizer, loss and training step, built one way for training, evaluation, the
time-budget probe, `cnnlab bench` and the benchmarks."""

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cnnlab.device import autocast_dtype
from cnnlab.training.averaging import WeightAverage
from cnnlab.training.finetune import Finetune, head_module
from cnnlab.training.muon import MuonWithSGD, hidden_matrices, with_muon_groups
from cnnlab.training.optim import BiasLR, build_optimizer, parameter_groups
from cnnlab.training.step import BatchMix, TrainStep, unwrapped


def build_model(cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The configured model (on the CPU) for inputs of `input_shape` (channels, height, width)."""
    channels, height, width = input_shape
    return instantiate(cfg.model, in_channels=channels, num_classes=num_classes, image_size=[height, width])


def configured_finetune(cfg: DictConfig) -> Finetune:
    trainer = cfg.trainer
    return Finetune(trainer.finetune, trainer.head_epochs, trainer.backbone_lr_factor)


def configured_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """The configured optimizer over the parameters `trainer.finetune` trains, norm weights and biases exempt
    from decay when asked, biases at lr x `trainer.bias_lr_factor`."""
    parts = configured_finetune(cfg).trained_parameters(model)
    bias_lr = BiasLR.of(model, cfg.trainer.bias_lr_factor, cfg.optimizer.get("weight_decay", 0.0))
    groups = parameter_groups(parts, cfg.lr, cfg.trainer.no_decay_norm_bias, bias_lr)
    factory = instantiate(cfg.optimizer)
    if getattr(factory, "func", None) is MuonWithSGD:  # optimizer=muon: the hidden layers' matrices go to Muon
        groups = with_muon_groups(groups, hidden_matrices(model, head_module(model)))
    return build_optimizer(factory, groups)


def configured_averaging(cfg: DictConfig, model: nn.Module) -> WeightAverage | None:
    """`trainer.weight_averaging` over `model` (unwrapped from torch.compile and DDP), or None when it is `none`.

    lookahead is an average of the parameters with decay 1 - alpha, every k steps, that the training weights
    are reset to (Lookahead's slow weights).
    """
    trainer, plain = cfg.trainer, unwrapped(model)
    mode = trainer.get("weight_averaging", "none")
    if mode == "ema":
        return WeightAverage(plain, trainer.ema_decay, trainer.ema_every, warmup=True)
    if mode == "lookahead":
        return WeightAverage(plain, 1 - trainer.lookahead_alpha, trainer.lookahead_steps, pull_back=True)
    return None


def configured_loss(cfg: DictConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)


def step_batch_size(cfg: DictConfig) -> int:
    """Images per optimizer step: `batch_size` per forward pass, x `trainer.accumulate_grad_batches`."""
    return int(cfg.batch_size) * int(cfg.trainer.get("accumulate_grad_batches", 1))


def configured_mix(cfg: DictConfig, num_classes: int) -> BatchMix | None:
    """MixUp and/or CutMix (`trainer.mixup_alpha`, `cutmix_alpha`; one of them at random when both are on), applied
    to a batch with probability `trainer.mix_prob`; None when both are off."""
    from torchvision.transforms import v2

    trainer = cfg.trainer
    if trainer.get("overfit_batches", 0):  # the sanity check trains on the plain images
        return None
    mixes = []
    if trainer.get("mixup_alpha", 0.0) > 0:
        mixes.append(v2.MixUp(alpha=float(trainer.mixup_alpha), num_classes=num_classes))
    if trainer.get("cutmix_alpha", 0.0) > 0:
        mixes.append(v2.CutMix(alpha=float(trainer.cutmix_alpha), num_classes=num_classes))
    if not mixes:
        return None
    chosen = mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
    probability = float(trainer.get("mix_prob", 1.0))

    def mix(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if probability < 1 and torch.rand(()).item() >= probability:  # the CPU generator: no device sync
            return images, labels
        return chosen(images, labels)

    return mix


def configured_step(
    cfg: DictConfig,
    model: nn.Module,
    device: torch.device,
    num_classes: int,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
) -> TrainStep:
    """The run's training step over `model`: its loss, its autocast setting (`trainer.amp` on `device`), its weight
    averaging, gradient clipping, accumulation and batch mixing.

    Without `optimizer`, a fresh configured one (what the probe and bench want: the run's state stays untouched).
    """
    trainer = cfg.trainer
    return TrainStep(
        model,
        optimizer or configured_optimizer(cfg, model),
        configured_loss(cfg),
        device=device,
        amp_dtype=autocast_dtype(device, trainer.amp),
        scheduler=scheduler,
        averaging=configured_averaging(cfg, model),
        clip_grad_norm=trainer.get("gradient_clip_val"),
        accumulate=int(trainer.get("accumulate_grad_batches", 1)),
        mix=configured_mix(cfg, num_classes),
    )
