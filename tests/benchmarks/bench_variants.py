"""Throughput of the model variants, eager vs channels_last vs torch.compile, measured as `cnnlab bench` does.

For each model (the presets' networks and the packaged model options) and each execution variant:
training images/s (augmented batches, forward, backward, optimizer step), inference images/s, and the
warm-up time (compilation included). MACs per image put the wall-clock figures next to the FLOP count.

    python tests/benchmarks/bench_variants.py                             # synthetic data, about 5 minutes
    python tests/benchmarks/bench_variants.py --data cifar10-jpeg.tar.gz
    python tests/benchmarks/bench_variants.py --no-compile --seconds 2    # quicker
"""

import argparse

import torch

from cnnlab.data.build import build_data
from cnnlab.models.stats import count_macs
from cnnlab.training.bench import VARIANTS, measure_variant
from cnnlab.training.components import build_model

from data_args import add_data_argument, compose_train, dataset_overrides

MODELS = {
    "cifar10_fast": ["experiment=cifar10_fast"],
    "cifar10_10min": ["experiment=cifar10_10min"],
    "efficient": ["model=efficient"],
    "efficient_tiny": ["model=efficient_tiny"],
    "simple_cnn": ["model=simple_cnn"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--seconds", type=float, default=3, help="timed seconds per measurement")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()

    variants = [v for v, (_, compiled) in VARIANTS.items() if not (compiled and args.no_compile)]
    rows = []
    for name in args.models:
        cfg = compose_train(
            [*MODELS[name], *dataset_overrides(args.data, 4000), "device=cpu", f"+bench.seconds={args.seconds}"]
        )
        data = build_data(
            cfg.dataset, cfg.batch_size, cfg.trainer.eval_batch_size, torch.device("cpu"), cfg.seed, False
        )
        macs = count_macs(build_model(cfg, data.input_shape, len(data.classes)), data.input_shape)
        for variant in variants:
            result = measure_variant(cfg, data, torch.device("cpu"), variant)
            rows.append((name, macs, cfg.batch_size, variant, result))
            print(f"{name} {variant}: {result}", flush=True)

    print(f"\nCPU, {torch.get_num_threads()} threads, {args.seconds:g} s per measurement after warm-up\n")
    print("| model | MMACs/image | batch | variant | train img/s | train GFLOP/s | inference img/s | warm-up s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, macs, batch, variant, r in rows:
        gflops = 6 * macs * r["train_images_per_s"] / 1e9  # forward 2 FLOPs per MAC, backward about twice that
        print(
            f"| {name} | {macs / 1e6:.1f} | {batch} | {variant} | {r['train_images_per_s']:,.0f} | {gflops:.0f} | "
            f"{r['inference_images_per_s']:,.0f} | {r['warmup_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
