"""Data-parallel throughput: the same run on 1 process and on N (`trainer.devices=N`), side by side.

    python tests/benchmarks/bench_data_parallel.py                        # synthetic data, the CPU, N=2
    python tests/benchmarks/bench_data_parallel.py --data cifar10-jpeg.tar.gz --epochs 2
    python tests/benchmarks/bench_data_parallel.py --device cuda --processes 1 2 4 --model-args experiment=cifar10_fast

On the CPU every variant shares the same cores: one process with all of them, or N with cores / N threads
each. Prints training images/s, seconds per epoch and validation accuracy for each process count, and each
count's speed relative to one process, measured in this one run.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from data_args import add_data_argument, dataset_overrides  # noqa: E402
from runs import mean_images_per_s, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts (default 1 2)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="the global batch (default 256)")
    parser.add_argument("--model-args", nargs="*", default=[], help="more train overrides, e.g. model=simple_cnn")
    args = parser.parse_args()

    common = [
        *dataset_overrides(args.data),
        f"device={args.device}",
        f"epochs={args.epochs}",
        f"batch_size={args.batch_size}",
        "trainer.histograms=false",
        *args.model_args,
    ]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.processes:
            metrics = train([*common, f"trainer.devices={count}"], Path(scratch) / f"p{count}")
            epoch_s = sum(h["time/epoch_s"] for h in metrics["history"]) / len(metrics["history"])
            rows.append((count, mean_images_per_s(metrics), epoch_s, metrics["best_val_acc"], metrics["threads"]))
    base = rows[0][1]
    print(f"\n{'processes':>9} {'threads each':>12} {'images/s':>9} {'s/epoch':>8} {'val acc':>8} {'speed':>6}")
    for count, rate, epoch_s, acc, threads in rows:
        print(f"{count:>9} {threads:>12} {rate:>9.0f} {epoch_s:>8.1f} {acc:>8.4f} {rate / base:>5.2f}x")


if __name__ == "__main__":
    main()
