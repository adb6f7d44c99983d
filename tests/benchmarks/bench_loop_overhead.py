"""Loop overhead: a cnnlab training epoch against the bare forward/backward/step of the same model, in one run.

The cnnlab side is the real thing: the run `cnnlab train` would build from the same overrides (data with
batched augmentation, progress, TensorBoard scalars and histograms, metrics.json, the end-of-epoch
checkpoint), timed around `Trainer.fit` for one epoch, minus the validation pass (evaluation, not loop).
The bare side trains a fresh copy of the same model with the same optimizer on a few pre-made,
already normalised batches, for the same number of steps. The two alternate; the overhead is the median of
the repeats' ratios, each taken between two measurements made back to back, so a shared machine's slow
minutes fall on both sides of a ratio instead of between the sides' medians.

    python tests/benchmarks/bench_loop_overhead.py                       # synthetic data, about 2 minutes
    python tests/benchmarks/bench_loop_overhead.py --data cifar10-jpeg.tar.gz
"""

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.training.components import build_model, configured_step
from cnnlab.training.run import PreparedRun, prepare_run, seed_everything
from cnnlab.training.throughput import training_steps

from data_args import add_data_argument, compose_train, dataset_overrides

TARGET = 0.02


def loop_epoch(cfg, work: Path) -> tuple[float, int]:
    """Seconds of one cnnlab epoch without its validation pass, and the steps it took."""
    run: PreparedRun = prepare_run(cfg, Path(tempfile.mkdtemp(dir=work)))
    trainer, validate = run.trainer, run.trainer.evaluate
    validation_s = 0.0

    def timed_validate(loader, tta=None):
        nonlocal validation_s
        start = time.perf_counter()
        result = validate(loader, tta)
        validation_s += time.perf_counter() - start
        return result

    trainer.evaluate = timed_validate
    with run.tracker:
        run.tracker.run_started(run.info)
        start = time.perf_counter()
        trainer.fit(run.data.train, run.data.val, epochs=1)
        total = time.perf_counter() - start
    return total - validation_s, len(run.data.train)


def bare_steps(cfg, steps: int, batches: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> float:
    """Seconds for `steps` forward/backward/optimizer steps of a fresh model on pre-made batches."""
    seed_everything(cfg.seed)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    model = build_model(cfg, tuple(batches[0][0].shape[1:]), num_classes).to(memory_format=memory_format).train()
    step = training_steps(configured_step(cfg, model, torch.device("cpu"), num_classes), itertools.cycle(batches))
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--experiment", default="cifar10_fast", help="the preset whose model and batch size are timed")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each side")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch on synthetic data")
    parser.add_argument("overrides", nargs="*", help="more train overrides, e.g. batch_size=512")
    args = parser.parse_args()

    probe = compose_train([f"experiment={args.experiment}", *args.overrides])
    synthetic_size = int(args.steps * probe.batch_size / 0.9) + 1  # 10% is held out for validation
    overrides = [
        f"experiment={args.experiment}",
        *dataset_overrides(args.data, synthetic_size),
        "epochs=1",
        "trainer.time_budget=null",
        "device=cpu",
        *args.overrides,
    ]
    cfg = compose_train(overrides)
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-overhead-"))
    first = prepare_run(cfg, work / "probe")
    batches = [tuple(t.clone() for t in batch) for batch in itertools.islice(iter(first.data.train), 4)]
    first.tracker.close()

    loop_times, bare_times = [], []
    for repeat in range(args.repeats):
        seconds, steps = loop_epoch(cfg, work)
        loop_times.append(seconds)
        bare_times.append(bare_steps(cfg, steps, batches, len(first.data.classes)))
        print(
            f"repeat {repeat + 1}: cnnlab epoch {loop_times[-1]:.2f} s, bare {bare_times[-1]:.2f} s ({steps} steps), "
            f"overhead {100 * (loop_times[-1] / bare_times[-1] - 1):+.1f}%",
            flush=True,
        )
    loop_s, bare_s = statistics.median(loop_times), statistics.median(bare_times)
    overhead = statistics.median(loop / bare - 1 for loop, bare in zip(loop_times, bare_times))
    images = steps * cfg.batch_size
    print(
        f"\nloop overhead, {args.experiment} model, batch {cfg.batch_size}, {steps} steps per epoch, "
        f"{cfg.dataset.name}, {torch.get_num_threads()} threads, median of {args.repeats}\n"
    )
    print("| side | seconds per epoch | images/s |")
    print("|---|---:|---:|")
    print(f"| bare forward/backward/step (pre-made batches) | {bare_s:.2f} | {images / bare_s:,.0f} |")
    print(
        f"| cnnlab epoch (data, augmentation, progress, logging, checkpoint) | {loop_s:.2f} | {images / loop_s:,.0f} |"
    )
    print(
        f"\noverhead {100 * overhead:+.1f}% of the bare step time, the median repeat's "
        f"(target <= {100 * TARGET:.0f}%): "
        f"{'met' if overhead <= TARGET else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
