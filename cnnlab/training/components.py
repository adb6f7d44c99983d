"""The config's model, optimizer and loss, built one way for training, evaluation, `cnnlab bench` and the benchmarks."""

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from cnnlab.training.optim import build_optimizer


def build_model(cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The configured model (on the CPU) for inputs of `input_shape` (channels, height, width)."""
    channels, height, width = input_shape
    return instantiate(cfg.model, in_channels=channels, num_classes=num_classes, image_size=[height, width])


def configured_optimizer(cfg: DictConfig, model: nn.Module) -> Optimizer:
    """The configured optimizer over `model`, with norm weights and biases exempt from decay when asked."""
    return build_optimizer(instantiate(cfg.optimizer), model, cfg.trainer.no_decay_norm_bias)


def configured_loss(cfg: DictConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.trainer.label_smoothing)
