"""The fast-training tricks one at a time: an ablation ladder up to a preset, at equal training time.

The first rung is the preset with every trick turned off; each next rung turns one more back on, and the
last rung is the preset itself. Every rung trains the real `cnnlab train experiment=<preset>` for the same
time budget, once per seed; the table gives validation accuracy (mean ± std over the seeds), epochs,
images/s and training minutes, as a Markdown table.

    python tests/benchmarks/bench_ablation.py                                          # synthetic data, 30 s runs
    python tests/benchmarks/bench_ablation.py --data cifar10-jpeg.tar.gz --budget 10m --seeds 0 1
"""

import argparse
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from data_args import add_data_argument, compose_train, dataset_overrides
from runs import mean_images_per_s, mean_std, train

# (rung, the overrides that turn its trick off); rung k runs with the "off" overrides of every later rung
LADDER: list[tuple[str, list[str]]] = [
    ("baseline: the network, Nesterov SGD, linear decay, label smoothing", []),
    ("+ whitening stem", ["model.stem=conv"]),
    ("+ dirac init", ["model.init=default"]),
    (
        "+ frozen BN scales, BN biases at lr x 64, BN momentum 0.6",
        ["model.bn_frozen_scale=false", "trainer.bias_lr_factor=1", "model.bn_momentum=0.1"],
    ),
    ("+ lookahead weights", ["trainer.weight_averaging=none"]),
    ("+ alternating flip, reflect padding", ["dataset.augment.flip_mode=random", "dataset.augment.pad_mode=zeros"]),
    ("+ flip and translate TTA", ["trainer.tta=none"]),
    ("+ Muon for the convolution filters", ["optimizer=sgd"]),  # and the preset's optimizer.muon_* keys removed
]


def ladder(experiment: str) -> list[tuple[str, list[str]]]:
    """LADDER for `experiment`: the Muon rung also removes every optimizer.muon_* setting the preset makes, which
    SGD would refuse."""
    optimizer = compose_train([f"experiment={experiment}"]).optimizer
    muon_keys = [f"~optimizer.{key}" for key in optimizer if str(key).startswith("muon_")]
    return [(name, [*off, *muon_keys] if "optimizer=sgd" in off else off) for name, off in LADDER]


def rung_overrides(rungs: list[tuple[str, list[str]]], rung: int) -> list[str]:
    return [override for _, off in rungs[rung + 1 :] for override in off]


def check_ladder(experiment: str, rungs: list[tuple[str, list[str]]]) -> None:
    """Every rung's "off" overrides must change the preset: a trick the preset lacks is no rung of its ladder."""
    preset = OmegaConf.to_container(compose_train([f"experiment={experiment}"]), resolve=False)
    for name, off in rungs[1:]:
        changed = OmegaConf.to_container(compose_train([f"experiment={experiment}", *off]), resolve=False)
        if changed == preset:
            raise SystemExit(f"experiment={experiment} does not use the rung {name!r}: {' '.join(off)} changes nothing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_10min", help="the preset the ladder climbs to")
    parser.add_argument(
        "--budget", help="trainer.time_budget of every run (default: 30s on synthetic data, else the preset's)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temporary folder)")
    args = parser.parse_args()

    rungs = ladder(args.experiment)
    check_ladder(args.experiment, rungs)
    out = args.out or Path(tempfile.mkdtemp(prefix="cnnlab-bench-ablation-"))
    budget = args.budget or (None if args.data else "30s")
    common = [f"experiment={args.experiment}", *dataset_overrides(args.data, 10_000)]
    common += [f"trainer.time_budget={budget}"] if budget else []
    results = []
    for rung, (name, _) in enumerate(rungs):
        runs = [
            train([*common, *rung_overrides(rungs, rung), f"seed={seed}"], out / f"rung{rung}-seed{seed}")
            for seed in args.seeds
        ]
        results.append((name, runs))

    data_name = "synthetic" if args.data is None else args.data.name
    print(
        f"\nexperiment={args.experiment} on {data_name}, time budget {budget or 'of the preset'}, seeds {args.seeds}\n"
    )
    print("| rung | val acc, mean ± std | per seed | epochs | images/s | training min |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in results:
        accs = [100 * r["best_val_acc"] for r in runs]
        mean, std = mean_std(accs)
        epochs = sum(r["epochs_completed"] for r in runs) / len(runs)
        rate = sum(map(mean_images_per_s, runs)) / len(runs)
        minutes = sum(r["train_time_s"] for r in runs) / len(runs) / 60
        listed = ", ".join(f"{a:.2f}" for a in accs)
        print(f"| {name} | {mean:.2f}% ± {std:.2f} | {listed} | {epochs:g} | {rate:.0f} | {minutes:.2f} |")
    print(f"\nruns in {out}")


if __name__ == "__main__":
    main()
