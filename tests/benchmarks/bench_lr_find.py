"""Is `cnnlab lr-find`'s suggestion any good? Run the range test, then train with the suggested learning rate and
with 10x and 0.1x of it, side by side, and print the validation accuracy of each.

    python tests/benchmarks/bench_lr_find.py                                     # synthetic data, 3 epochs each
    python tests/benchmarks/bench_lr_find.py --data cifar10-jpeg.tar.gz --epochs 3
    python tests/benchmarks/bench_lr_find.py --data <same> model=simple_cnn optimizer=adamw
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from data_args import add_data_argument, dataset_overrides
from runs import cnnlab_executable, mean_images_per_s, train

FACTORS = (0.1, 1.0, 10.0)


def suggested_lr(overrides: list[str], out: Path) -> float:
    command = [cnnlab_executable(), "lr-find", *overrides, f"hydra.run.dir={out / 'lr_find'}"]
    print(" ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"lr-find failed: {done.stderr.strip()[-500:]}")
    found = re.search(r"cnnlab train lr=(\S+)", done.stdout + done.stderr)
    if found is None:
        sys.exit("lr-find printed no suggestion")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training run")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="more overrides, for lr-find and the runs alike")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cnnlab-lr-find-"))
    common = [*dataset_overrides(args.data), *args.overrides]
    suggestion = suggested_lr(common, out)
    rows = []
    for factor in FACTORS:
        lr = suggestion * factor
        metrics = train([*common, f"lr={lr:.3g}", f"epochs={args.epochs}"], out / f"lr_x{factor:g}")
        rows.append((factor, lr, metrics["best_val_acc"], metrics["train_time_s"], mean_images_per_s(metrics)))
    print(
        f"\nlr-find suggested lr={suggestion:.3g}; {args.epochs} epochs each ({' '.join(args.overrides) or 'defaults'})"
    )
    print("| lr | x suggestion | best val acc | train time | images/s |")
    print("|---:|---:|---:|---:|---:|")
    for factor, lr, acc, seconds, rate in rows:
        print(f"| {lr:.3g} | {factor:g}x | {100 * acc:.2f}% | {seconds:.0f} s | {rate:,.0f} |")
    best = max(rows, key=lambda row: row[2])
    print(f"best of the three: {best[0]:g}x the suggestion")


if __name__ == "__main__":
    main()
