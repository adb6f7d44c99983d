"""Search strategies side by side: grid, random, TPE and GP on one trial budget, and TPE with and without pruning.

Every strategy searches the same space (learning rate and weight decay, both log scale) with the same
number of trials and the same short training per trial, through the real `cnnlab -m` command. Printed
per strategy: best validation accuracy, compute spent (training seconds and epochs summed over trials),
pruned trials and wall time.

    python tests/benchmarks/bench_search.py                                   # synthetic data, a few minutes
    python tests/benchmarks/bench_search.py --data cifar10-jpeg.tar.gz   # CIFAR-10 JPEG copy

With --data, a class-balanced subset (--per-class images per class) of the image folder is searched,
with 20% of it held out for validation.
"""

import argparse
import csv
import math
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from runs import cnnlab_executable

SPACE = ["lr=tag(log,interval(1e-3,1))", "weight_decay=tag(log,interval(1e-5,1e-2))"]


def log_grid(low: float, high: float, count: int) -> list[float]:
    if count == 1:
        return [math.sqrt(low * high)]
    return [float(f"{low * (high / low) ** (i / (count - 1)):.3g}") for i in range(count)]


def strategies(trials: int) -> dict[str, list[str]]:
    """Command-line arguments of each strategy; the grid is 4 learning rates x trials/4 weight decays."""
    lrs = ",".join(map(str, log_grid(1e-3, 1, 4)))
    wds = ",".join(map(str, log_grid(1e-5, 1e-2, trials // 4)))
    budget = [f"hydra.sweeper.n_trials={trials}"]
    return {
        "grid": [f"lr={lrs}", f"weight_decay={wds}"],
        "random": ["sweeper=random", *SPACE, *budget],
        "tpe": ["sweeper=tpe", *SPACE, *budget],
        "gp": ["sweeper=gp", *SPACE, *budget],
        "tpe+median pruning": ["sweeper=tpe", "pruner=median", "pruner.n_startup_trials=2", *SPACE, *budget],
    }


def image_subset(data: Path, per_class: int, work: Path) -> Path:
    """A folder of symlinks to the first `per_class` images of each class (unpacking a .tar.gz first)."""
    if data.is_file():
        with tarfile.open(data) as archive:
            archive.extractall(work / "unpacked", filter="data")
        data = work / "unpacked"
    classes = [p for p in sorted(data.rglob("*")) if p.is_dir() and any(c.is_file() for c in p.iterdir())]
    subset = work / "subset"
    for folder in classes:
        target = subset / folder.name
        target.mkdir(parents=True)
        for image in sorted(p for p in folder.iterdir() if p.is_file())[:per_class]:
            (target / image.name).symlink_to(image.resolve())
    return subset


def summarize(sweep: Path, wall_s: float) -> dict[str, object]:
    with open(sweep / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    accs = [float(r["best_val_acc"]) for r in rows if r["status"] == "completed" and r["best_val_acc"]]
    return {
        "trials": len(rows),
        "best_val_acc": max(accs) if accs else float("nan"),
        "pruned": sum(r["status"].startswith("pruned") for r in rows),
        "failed": sum(r["status"] in ("failed", "diverged") for r in rows),
        "epochs_trained": sum(int(r["epochs"] or 0) for r in rows),
        "train_s": sum(float(r["time_s"] or 0) for r in rows),
        "wall_s": wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an image folder or the .tar.gz of one (default: synthetic data)")
    parser.add_argument("--per-class", type=int, default=1000, help="images per class taken from --data")
    parser.add_argument("--trials", type=int, default=8, help="trials per strategy (a multiple of 4)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--model", default="efficient_tiny")
    parser.add_argument("--out", type=Path, help="keep the sweeps here (default: a temporary folder)")
    args = parser.parse_args()
    if args.trials % 4:
        parser.error("--trials must be a multiple of 4 (the grid is 4 learning rates x trials/4 weight decays)")

    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-search-"))
    out = args.out or work / "sweeps"
    cnnlab = cnnlab_executable()
    common = [f"model={args.model}", f"epochs={args.epochs}", "batch_size=128", "trainer.histograms=false"]
    if args.data:
        common += [
            "dataset=imagefolder",
            f"dataset.root={image_subset(args.data, args.per_class, work)}",
            "dataset.val_size=0.2",
        ]
        data_name = f"{args.data.name}, {args.per_class} images per class"
    else:
        common += ["dataset=synthetic", "dataset.train_size=5000", "dataset.val_size=1000", "dataset.test_size=500"]
        data_name = "synthetic, 4,000 train / 1,000 val"

    results = {}
    for name, extra in strategies(args.trials).items():
        sweep = out / name.replace("+", "_").replace(" ", "_")
        start = time.perf_counter()
        done = subprocess.run(
            [cnnlab, "-m", *common, *extra, f"hydra.sweep.dir={sweep}"], capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = summarize(sweep, time.perf_counter() - start)
        print(f"{name}: {results[name]}", flush=True)

    print(
        f"\nsearch over lr and weight decay, {args.trials} trials x {args.epochs} epochs, "
        f"model={args.model}, {data_name}\n"
    )
    header = "| strategy | trials | best val acc | pruned | failed | epochs trained | training s | wall s |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['trials']} | {r['best_val_acc']:.4f} | {r['pruned']} | {r['failed']} | "
            f"{r['epochs_trained']} | {r['train_s']:.0f} | {r['wall_s']:.0f} |"
        )
    base, pruned = results["tpe"], results["tpe+median pruning"]
    print(
        f"\npruning: {pruned['epochs_trained']}/{base['epochs_trained']} epochs "
        f"({pruned['train_s'] / max(base['train_s'], 1e-9):.2f}x the training time of TPE without it), "
        f"best val acc {pruned['best_val_acc']:.4f} vs {base['best_val_acc']:.4f}"
    )
    print(f"sweep folders: {out}")


if __name__ == "__main__":
    main()
