"""Model size and cost: trainable parameters, multiply-accumulates and latency per image."""

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.device import synchronize


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """MACs of one forward pass on one image (FLOPs / 2 as torch's counter reports them)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure_latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 20, max_s: float = 2.0) -> float:
    """Median wall time of one forward pass on one image (eval mode, no grad) on the model's device.

    A search can minimize it instead of MACs: MACs ignore memory-bound layers, the clock does not.
    """
    image = example[:1]
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(3):  # warm-up: allocator, kernels, caches
                model(image)
            synchronize(image.device)
            deadline = time.perf_counter() + max_s
            while len(times) < repeats and time.perf_counter() < deadline:
                start = time.perf_counter()
                model(image)
                synchronize(image.device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000 * sorted(times)[len(times) // 2]
