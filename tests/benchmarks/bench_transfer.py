"""Transfer against training from scratch at equal training time: five classes -> the other five.

A network is trained on classes 0-4 (`dataset.classes`), then each variant trains on classes 5-9 for the
same time budget: from scratch, and from the first run's weights (`init_from=`, a new head) with the
head alone (`trainer.finetune=head`), everything (`full`) or the head first (`gradual`). Every run is the
real `cnnlab train`; the table gives validation accuracy, epochs, images/s and minutes.

    python tests/benchmarks/bench_transfer.py                                  # synthetic data, seconds
    python tests/benchmarks/bench_transfer.py --data cifar10-jpeg.tar.gz --budget 4m --pretrain 8m --seeds 0 1
"""

import argparse
import tempfile
from pathlib import Path

from data_args import add_data_argument, dataset_overrides
from runs import mean_images_per_s, mean_std, train

FIRST, OTHER = "[0,1,2,3,4]", "[5,6,7,8,9]"
VARIANTS = {
    "from scratch": [],
    "init_from, head only": ["trainer.finetune=head"],
    "init_from, full": ["trainer.finetune=full"],
    "init_from, gradual": ["trainer.finetune=gradual", "trainer.head_epochs=1"],
}


def one_seed(common: list[str], args: argparse.Namespace, out: Path) -> tuple[float, dict[str, tuple]]:
    """Pretrain on classes 0-4, then every variant on classes 5-9: (pretrained val acc, variant -> figures)."""
    source = out / "pretrain"
    pretrained = train([*common, f"dataset.classes={FIRST}", f"trainer.time_budget={args.pretrain}"], source)
    rows = {}
    for name, extra in VARIANTS.items():
        start_from = [f"init_from={source}"] if extra else []
        run = out / name.replace(", ", "-").replace(" ", "_")
        metrics = train(
            [*common, f"dataset.classes={OTHER}", f"trainer.time_budget={args.budget}", *start_from, *extra], run
        )
        rows[name] = (
            metrics["best_val_acc"],
            metrics["epochs_completed"],
            mean_images_per_s(metrics),
            metrics["train_time_s"] / 60,
        )
    return pretrained["best_val_acc"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_10min", help="the preset every run uses")
    parser.add_argument("--pretrain", default="40s", help="trainer.time_budget of the run on classes 0-4")
    parser.add_argument("--budget", default="20s", help="trainer.time_budget of each run on classes 5-9")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat everything with each seed")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="cnnlab-bench-transfer-"))
    common = [f"experiment={args.experiment}", *dataset_overrides(args.data, 10_000)]
    results = {seed: one_seed([*common, f"seed={seed}"], args, out / f"seed{seed}") for seed in args.seeds}
    data_name = "synthetic" if args.data is None else args.data.name
    pretrained = ", ".join(f"{acc:.4f}" for acc, _ in results.values())
    print(
        f"\n{args.experiment} on {data_name}; pretrained on classes 0-4 for {args.pretrain} (val acc {pretrained}), "
        f"then classes 5-9 for {args.budget} each; seeds {' '.join(map(str, args.seeds))}\n"
    )
    print(
        f"{'variant':<22} {'val acc (per seed)':>24} {'mean':>7} {'std':>7} {'epochs':>7} {'img/s':>7} {'minutes':>8}"
    )
    for name in VARIANTS:
        per_seed = [rows[name] for _, rows in results.values()]
        accs = [row[0] for row in per_seed]
        mean, std = mean_std(accs)
        epochs, rate, minutes = (sum(row[i] for row in per_seed) / len(per_seed) for i in (1, 2, 3))
        listed = " ".join(f"{acc:.4f}" for acc in accs)
        print(f"{name:<22} {listed:>24} {mean:>7.4f} {std:>7.4f} {epochs:>7.1f} {rate:>7.0f} {minutes:>8.2f}")
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
