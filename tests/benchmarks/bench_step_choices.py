"""Two choices that change a preset's training speed and nothing else, measured side by side in one run.

1. Where a max-pooled block pools (`model.pool_before_norm`): after the whole block, or right after its first
   convolution, so that BatchNorm and the activation run on a quarter of the pixels. Training images/s of
   the preset both ways, through the run's own step on real augmented batches (as `cnnlab bench` measures).
2. Muon's orthogonalisation: torch.optim.Muon (bfloat16 Newton-Schulz iterations) against cnnlab's Muon
   (float32 off CUDA), one optimizer step over the preset's hidden filters viewed as matrices.

Each measurement is repeated `--rounds` times, the variants alternating, and the best round is reported.

    python tests/benchmarks/bench_step_choices.py                         # synthetic data, about a minute
    python tests/benchmarks/bench_step_choices.py --data cifar10-jpeg.tar.gz --experiment cifar10_fast
"""

import argparse
import time

import torch
from torch import nn

from cnnlab.data.build import build_data
from cnnlab.device import flush_denormals
from cnnlab.training.bench import measure_variant
from cnnlab.training.components import build_model
from cnnlab.training.finetune import head_module
from cnnlab.training.muon import Muon, hidden_matrices, matrix_view

from data_args import add_data_argument, compose_train, dataset_overrides


def optimizer_step_seconds(optimizer: torch.optim.Optimizer, matrices: list[nn.Parameter], steps: int = 5) -> float:
    """Seconds per optimizer step over `matrices` with fresh random gradients (after one warm-up step)."""
    for index in range(steps + 1):
        if index == 1:
            start = time.perf_counter()
        for matrix in matrices:
            matrix.grad = torch.randn_like(matrix)
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_10min")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds of each training measurement")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    base = [
        f"experiment={args.experiment}",
        *dataset_overrides(args.data),
        "device=cpu",
        f"+bench.seconds={args.seconds}",
    ]
    preset = compose_train(base)
    device = torch.device("cpu")
    flush_denormals(device)
    data = build_data(
        preset.dataset, preset.batch_size, preset.trainer.eval_batch_size, device, preset.seed, channels_last=False
    )
    layouts = {value: compose_train([*base, f"model.pool_before_norm={str(value).lower()}"]) for value in (False, True)}
    speeds: dict[bool, float] = {}
    for _ in range(args.rounds):
        for value, cfg in layouts.items():
            rate = measure_variant(cfg, data, device, "channels_last")["train_images_per_s"]
            speeds[value] = max(speeds.get(value, 0.0), rate)

    model = build_model(preset, data.input_shape, len(data.classes))
    hidden = hidden_matrices(model, head_module(model))
    shapes = [tuple(matrix_view(p)[0].shape) for p in model.parameters() if id(p) in hidden]
    matrices = [nn.Parameter(torch.randn(shape)) for shape in shapes]
    optimizers = {"torch.optim.Muon (bfloat16)": torch.optim.Muon, "cnnlab Muon (float32)": Muon}
    seconds: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, kind in optimizers.items():
            took = optimizer_step_seconds(kind(matrices, lr=0.02), matrices)
            seconds[name] = min(seconds.get(name, float("inf")), took)

    print(f"\nexperiment={args.experiment}, batch {preset.batch_size}, {torch.get_num_threads()} threads\n")
    print("| BatchNorm and activation of a max-pooled block | train img/s | against pooling after the block |")
    print("| --- | ---: | ---: |")
    for value, label in (
        (False, "before the pool (pool after the block)"),
        (True, "after the pool (pool_before_norm)"),
    ):
        print(f"| {label} | {speeds[value]:.0f} | {speeds[value] / speeds[False]:.2f}x |")
    print(f"\n| Muon step over the {len(shapes)} hidden matrices | ms per step | speed-up |")
    print("| --- | ---: | ---: |")
    reference = seconds["torch.optim.Muon (bfloat16)"]
    for name, took in seconds.items():
        print(f"| {name} | {1000 * took:.1f} | {reference / took:.1f}x |")


if __name__ == "__main__":
    main()
