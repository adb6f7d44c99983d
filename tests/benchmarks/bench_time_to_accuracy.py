"""Time to accuracy of a preset: validation accuracy after each epoch against wall time, as CSV, PNG and a table.

Runs the real `cnnlab train experiment=<preset>` and reads its metrics.json: for every epoch the minutes
since training started, the training minutes so far (training and validation passes), and the
validation accuracy (flip TTA when the preset turns it on). The command's whole wall time (start-up,
data loading, the budget probe and the final evaluation included) is printed as well.

    python tests/benchmarks/bench_time_to_accuracy.py                                  # synthetic data, 1-minute budget
    python tests/benchmarks/bench_time_to_accuracy.py --data cifar10-jpeg.tar.gz   # a CIFAR-10 image folder: 30 min
    python tests/benchmarks/bench_time_to_accuracy.py --data <same> --experiment cifar10_10min
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_args import add_data_argument, dataset_overrides
from runs import cnnlab_executable

THRESHOLDS = (0.80, 0.85, 0.90, 0.92, 0.94)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["elapsed_min"] for r in rows], [100 * r["val_acc"] for r in rows], marker="o")
    for level in THRESHOLDS[2:]:
        ax.axhline(100 * level, color="grey", linewidth=0.6, linestyle="--")
    ax.set(xlabel="minutes since training started", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_fast")
    parser.add_argument(
        "--budget", help="trainer.time_budget (default: 1m on synthetic data, the preset's own with --data)"
    )
    parser.add_argument("--out", type=Path, help="folder for the run, CSV and PNG (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="more train overrides")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="cnnlab-bench-tta-"))
    out.mkdir(parents=True, exist_ok=True)
    budget = args.budget or (None if args.data else "1m")
    command = [
        cnnlab_executable(),
        "train",
        f"experiment={args.experiment}",
        *dataset_overrides(args.data, 20_000),
        *([f"trainer.time_budget={budget}"] if budget else []),
        f"hydra.run.dir={out / 'run'}",
        *args.overrides,
    ]
    print(" ".join(command), flush=True)
    start = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        sys.exit("the training run failed; see its output above")
    command_min = (time.perf_counter() - start) / 60

    metrics = json.loads((out / "run" / "metrics.json").read_text())
    rows, train_s = [], 0.0
    for entry in metrics["history"]:
        train_s += entry["time/epoch_s"]
        rows.append(
            {
                "epoch": entry["epoch"],
                "elapsed_min": round(entry["time/elapsed_s"] / 60, 3),
                "train_min": round(train_s / 60, 3),
                "val_acc": round(entry["val/acc"], 4),
                "train_acc": round(entry["train/acc"], 4),
                "lr": entry["lr"],
            }
        )
    data_name = "synthetic" if args.data is None else args.data.name
    write_csv(rows, out / "time_to_accuracy.csv")
    write_plot(
        rows,
        f"{args.experiment} on {data_name} ({metrics['threads']} {metrics['device']} threads)",
        out / "time_to_accuracy.png",
    )

    print(
        f"\n{args.experiment} on {data_name}, device {metrics['device']}, {metrics['threads']} threads, "
        f"{metrics['macs'] / 1e6:.1f} M MACs per image\n"
    )
    print("| epoch | minutes since start | training minutes | val acc |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['epoch']} | {r['elapsed_min']:.1f} | {r['train_min']:.1f} | {100 * r['val_acc']:.2f}% |")
    for level in THRESHOLDS:
        first = next((r for r in rows if r["val_acc"] >= level), None)
        reached = f"after {first['elapsed_min']:.1f} min (epoch {first['epoch']})" if first else "not reached"
        print(f"{100 * level:.0f}% validation accuracy: {reached}")
    print(
        f"\nbest {100 * metrics['best_val_acc']:.2f}% | whole command {command_min:.1f} min | "
        f"{out / 'time_to_accuracy.csv'} | {out / 'time_to_accuracy.png'}"
    )


if __name__ == "__main__":
    main()
