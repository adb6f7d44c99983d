"""How fast a config trains and predicts on this device, and how to run it fastest (`cnnlab bench`).

Each execution variant (eager NCHW, channels_last, torch.compile) trains a fresh copy of the model on
real augmented batches of the configured data set, then predicts on a validation batch; the variant
that would finish the run's training and validation soonest, compile time included, is recommended
as overrides for `cnnlab train`.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnnlab.atomic import atomic_json_dump
from cnnlab.config.duration import parse_duration
from cnnlab.data.build import DataBundle, build_data
from cnnlab.device import flush_denormals, resolve_device
from cnnlab.models.stats import count_macs
from cnnlab.training.components import build_model, configured_step, step_batch_size
from cnnlab.training.metrics import tta_views
from cnnlab.training.throughput import endless, inference_step, time_steps, training_steps

log = logging.getLogger("cnnlab")

# name -> (channels_last, compile)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "eager": (False, False),
    "channels_last": (True, False),
    "compiled": (True, True),
}


@dataclass
class RunWork:
    """What a run will do: images trained and images predicted (validation, once per TTA view)."""

    train_images: float
    predict_images: float = 0.0


def work_per_epoch(data: DataBundle, batch_size: int, tta: bool | str) -> RunWork:
    """The images one epoch trains, and the forwards its validation makes: one per image and TTA view."""
    return RunWork(len(data.train) * batch_size, len(data.val.data) * len(tta_views(tta)))


def run_seconds(row: dict[str, float], work: RunWork) -> float:
    return (
        work.train_images / row["train_images_per_s"]
        + work.predict_images / row["inference_images_per_s"]
        + row["warmup_s"]
    )


def choose_fastest(results: dict[str, dict[str, float]], work: RunWork) -> str:
    """The variant that finishes the run's training and validation soonest, its warm-up (compile time) included.

    torch.compile can win per step and still lose a short run to its compile time.
    """
    return min(results, key=lambda name: run_seconds(results[name], work))


def planned_epochs(cfg: DictConfig, eager: dict[str, float], work_per_epoch: RunWork) -> float:
    """`epochs`, or under trainer.time_budget about as many as the budget holds at the eager speed."""
    if cfg.trainer.time_budget is None:
        return float(cfg.epochs)
    return max(1.0, parse_duration(cfg.trainer.time_budget) / run_seconds({**eager, "warmup_s": 0.0}, work_per_epoch))


def overrides_for(variant: str) -> str:
    channels_last, compiled = VARIANTS[variant]
    return f"trainer.channels_last={str(channels_last).lower()} compile={str(compiled).lower()}"


def measure_variant(cfg: DictConfig, data: DataBundle, device: torch.device, variant: str) -> dict[str, float]:
    """Training and inference throughput of a fresh model in one execution variant, through the run's own step."""
    channels_last, compiled = VARIANTS[variant]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.input_shape, len(data.classes)).to(device, memory_format=memory_format).train()
    if compiled:
        torch._dynamo.reset()  # each measurement compiles from scratch, not on top of an earlier model's graphs
    step = configured_step(cfg, torch.compile(model) if compiled else model, device, len(data.classes))
    for loader in (data.train, data.val):
        loader.memory_format = memory_format
    train = time_steps(training_steps(step, endless(data.train)), device, cfg.bench.seconds)
    images = next(iter(data.val))[0]
    infer = time_steps(inference_step(step.model, images, step.amp_dtype), device, cfg.bench.seconds)
    return {
        "train_images_per_s": train.images_per_s,
        "inference_images_per_s": infer.images_per_s,
        "warmup_s": train.warmup_s + infer.warmup_s,
    }


def print_results(results: dict[str, dict[str, float]], best: str, title: str, epochs: float) -> None:
    from rich import box, get_console
    from rich.table import Table

    eager = results["eager"]
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in ("variant", "train img/s", "x eager", "infer img/s", "x eager", "warm-up s"):
        table.add_column(column, justify="left" if column == "variant" else "right", no_wrap=True)
    for name, row in results.items():
        table.add_row(
            name + (" *" if name == best else ""),
            f"{row['train_images_per_s']:,.0f}",
            f"{row['train_images_per_s'] / eager['train_images_per_s']:.2f}x",
            f"{row['inference_images_per_s']:,.0f}",
            f"{row['inference_images_per_s'] / eager['inference_images_per_s']:.2f}x",
            f"{row['warmup_s']:.1f}",
        )
    console = get_console()
    console.print(table)
    console.print(
        f"* fastest for {epochs:.0f} epochs with validation, warm-up included: {best}; train with  cnnlab train ... "
        f"{overrides_for(best)}",
        soft_wrap=True,
    )


def bench(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Measure every variant, print the table, write bench.json; expects a config validate_bench_config passed."""
    device = resolve_device(str(cfg.device))
    flush_denormals(device)  # as training does: the figures are the run's
    data = build_data(
        cfg.dataset, step_batch_size(cfg), cfg.trainer.eval_batch_size, device, cfg.seed, channels_last=False
    )
    variants = [name for name, (_, compiled) in VARIANTS.items() if cfg.bench.compile or not compiled]
    results = {}
    for name in variants:
        log.info("measuring %s ...", name)
        results[name] = measure_variant(cfg, data, device, name)
    per_epoch = work_per_epoch(data, cfg.batch_size, cfg.trainer.tta)
    epochs = planned_epochs(cfg, results["eager"], per_epoch)
    best = choose_fastest(results, RunWork(per_epoch.train_images * epochs, per_epoch.predict_images * epochs))
    model_name = cfg.model._target_.rsplit(".", 1)[-1]
    summary = {
        "model": model_name,
        "macs": count_macs(build_model(cfg, data.input_shape, len(data.classes)), data.input_shape),
        "dataset": cfg.dataset.name,
        "batch_size": cfg.batch_size,
        "eval_batch_size": cfg.trainer.eval_batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "variants": results,
        "epochs": epochs,
        "train_images_per_epoch": per_epoch.train_images,
        "predict_images_per_epoch": per_epoch.predict_images,
        "fastest": best,
        "overrides": overrides_for(best),
    }
    print_results(
        results,
        best,
        f"{model_name} on {cfg.dataset.name}, batch {cfg.batch_size}, {device} ({torch.get_num_threads()} threads)",
        epochs,
    )
    atomic_json_dump(summary, run_dir / "bench.json")
    log.info("bench.json is in %s", run_dir)
    return summary
