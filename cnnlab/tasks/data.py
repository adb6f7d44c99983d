"""`cnnlab data dataset=<name>`: class counts, image statistics and sample images, before any training."""

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - registers the resolvers the configs use
from cnnlab.config.validate import check_dataset_root
from cnnlab.errors import UserError
from cnnlab.tasks.common import run_task

log = logging.getLogger("cnnlab")


def check_config(cfg: DictConfig) -> None:
    """Fail on a bad value in well under a second, before torch and the data set are loaded."""
    check_dataset_root(cfg.dataset)
    per_class = cfg.samples_per_class
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0:
        raise UserError(f"samples_per_class={per_class!r} is invalid: must be a whole number > 0 (for example samples_per_class=8)")


def print_overview(name: str, summary: dict[str, Any]) -> None:
    """Two Rich tables: images per class in each split, then size, channels and pixel statistics."""
    from rich import get_console
    from rich.table import Table
    from rich.text import Text

    splits = [split for split in ("train", "test") if summary[split] is not None]
    counts = Table(title=f"{name}: images per class")
    counts.add_column("#", justify="right")
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
        counts.add_column("%", justify="right")
    for index, cls in enumerate(summary["classes"]):
        cells = []
        for split in splits:
            count, total = summary[split]["per_class"][cls], summary[split]["total"]
            cells += [f"{count:,}", f"{100 * count / max(total, 1):.1f}"]
        counts.add_row(str(index), Text(cls), *cells)  # Text: a folder name like "[x]" is not markup
    counts.add_section()
    counts.add_row("", "total", *(cell for split in splits for cell in (f"{summary[split]['total']:,}", "100.0")))

    stats = Table(title=f"{name}: images", show_header=False)
    height, width = summary["image_size"]
    rows = [
        ("image size", f"{height}x{width}"),
        ("channels", str(summary["channels"])),
        ("train pool", f"{summary['train']['total']:,}"),
        ("test split", f"{summary['test']['total']:,}" if summary["test"] is not None else "none"),
        ("total images", f"{summary['total_images']:,}"),
        ("mean per channel (train, 0-1)", ", ".join(f"{v:.4f}" for v in summary["mean"])),
        ("std per channel (train, 0-1)", ", ".join(f"{v:.4f}" for v in summary["std"])),
    ]
    for row in rows:
        stats.add_row(*row)
    console = get_console()
    console.print(counts)
    console.print(stats)


def data_task(cfg: DictConfig, run_dir: Path) -> None:
    check_config(cfg)
    from hydra.utils import instantiate

    from cnnlab.checkpoints.atomic import atomic_json_dump
    from cnnlab.data.overview import pick_samples, summarize
    from cnnlab.tracking.plots import save_class_distribution, save_samples

    source = instantiate(cfg.dataset.source)
    summary = summarize(source)
    print_overview(cfg.dataset.name, summary)

    classes = summary["classes"]
    splits = {split: list(summary[split]["per_class"].values()) for split in ("train", "test") if summary[split] is not None}
    samples = pick_samples(source.train, len(classes), cfg.samples_per_class)
    save_samples(samples, classes, cfg.samples_per_class, run_dir / "samples.png")
    save_class_distribution(splits, classes, run_dir / "class_distribution.png")
    atomic_json_dump({"dataset": cfg.dataset.name, **summary}, run_dir / "overview.json")
    log.info("overview.json, samples.png and class_distribution.png are in %s", run_dir)


@hydra.main(config_path="pkg://cnnlab.conf", config_name="data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_task(data_task, cfg)
