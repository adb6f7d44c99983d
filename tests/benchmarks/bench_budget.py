"""How much of a time budget a run uses: on a quiet machine, and with the machine busy for a while at the start.

Each run is the real `cnnlab train ... trainer.time_budget=<budget>`. For the busy case, other processes
spin on every core for the first `--busy` seconds of the run (as a second job or a browser would), which
slows the time probe and the first epoch. The table gives the seconds trained, the share of the budget
left unused (negative: over), the epochs, the images/s and where the learning rate ended, as a multiple
of the configured lr (the schedule's end value means it annealed).

    python tests/benchmarks/bench_budget.py                                   # synthetic data, 60 s budget
    python tests/benchmarks/bench_budget.py --data cifar10-jpeg.tar.gz --experiment cifar10_10min --budget 3m
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_args import add_data_argument, dataset_overrides
from runs import cnnlab_executable, mean_images_per_s


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run(overrides: list[str], run_dir: Path, busy_s: float) -> dict:
    command = [cnnlab_executable(), "train", *overrides]
    print(" ".join(command), flush=True)
    process = subprocess.Popen([*command, f"hydra.run.dir={run_dir}"], stdout=subprocess.DEVNULL)
    hogs = [multiprocessing.Process(target=spin, args=(busy_s,)) for _ in range(os.cpu_count() or 1) if busy_s > 0]
    for hog in hogs:
        hog.start()
    if process.wait() != 0:
        sys.exit(f"the run in {run_dir} failed; see its train.log")
    for hog in hogs:
        hog.join()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    metrics["lr_factor_at_end"] = checkpoint["scheduler"]["_last_lr"][0] / checkpoint["scheduler"]["base_lrs"][0]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_10min", help="the preset both runs use")
    parser.add_argument("--budget", default="60s", help="trainer.time_budget of each run")
    parser.add_argument("--busy", type=float, default=20.0, help="seconds every core is busy at the busy run's start")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="cnnlab-bench-budget-"))
    common = [f"experiment={args.experiment}", *dataset_overrides(args.data, 10_000)]
    common.append(f"trainer.time_budget={args.budget}")
    rows = {
        "quiet": run(common, out / "quiet", 0.0),
        f"busy for the first {args.busy:g} s": run(common, out / "busy", args.busy),
    }
    data_name = "synthetic" if args.data is None else args.data.name
    print(f"\n{args.experiment} on {data_name}, trainer.time_budget={args.budget}, {os.cpu_count()} cores\n")
    print(f"{'machine':<26} {'trained s':>10} {'unused':>8} {'epochs':>7} {'img/s':>7} {'lr at end / lr':>15}")
    for name, metrics in rows.items():
        budget, trained = metrics["time_budget_s"], metrics["train_time_s"]
        print(
            f"{name:<26} {trained:>10.1f} {100 * (budget - trained) / budget:>7.1f}% {metrics['epochs_completed']:>7} "
            f"{mean_images_per_s(metrics):>7.0f} {metrics['lr_factor_at_end']:>15.4f}"
        )
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
