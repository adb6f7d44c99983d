"""Evaluate a checkpoint on a split with the data and model settings stored in it; write eval.json."""

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnnlab.atomic import atomic_json_dump
from cnnlab.config.choices import tta_level
from cnnlab.data.build import build_data
from cnnlab.data.loader import BatchLoader
from cnnlab.device import resolve_device
from cnnlab.errors import UserError
from cnnlab.inference.local_data import with_local_data_settings
from cnnlab.inference.trained import load_trained
from cnnlab.tracking.terminal import print_evaluation
from cnnlab.tracking.tracker import PER_CLASS
from cnnlab.training.metrics import classification_report, predict

log = logging.getLogger("cnnlab")


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> float:
    """Print and save the evaluation; return the accuracy."""
    device = resolve_device(str(cfg.device))
    trained = load_trained(cfg.ckpt, device, bool(cfg.trust_code))
    run_cfg = trained.config
    run_cfg.dataset = with_local_data_settings(run_cfg.dataset)
    if cfg.data_root is not None:
        run_cfg.dataset.root = str(cfg.data_root)
    elif run_cfg.dataset.name == "imagefolder" and not Path(str(run_cfg.dataset.root)).expanduser().is_dir():
        raise UserError(
            f"the run's images were in {run_cfg.dataset.root}, which is no longer a folder; "
            "pass data_root=<where they are now>"
        )
    batch_size = cfg.batch_size or run_cfg.trainer.eval_batch_size
    channels_last = bool(run_cfg.trainer.channels_last)
    data = build_data(run_cfg.dataset, run_cfg.batch_size, batch_size, device, run_cfg.seed, channels_last)
    loader = split_loader(data, cfg.split, batch_size)
    tta = tta_level(cfg.tta)
    logits, labels = predict(trained.model, loader, trained.amp_dtype, tta)
    report = classification_report(logits, labels, len(data.classes))
    path = trained.path
    result: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": trained.epoch,
        "split": cfg.split,
        "tta": tta,
        **report,
        **{key: dict(zip(data.classes, report[key])) for key in PER_CLASS},
        "classes": data.classes,
    }
    atomic_json_dump(result, run_dir / "eval.json")
    title = f"{path} on {cfg.split} ({report['count']} images{f', {tta} TTA' if tta != 'none' else ''})"
    print_evaluation(result, data.classes, title=title)
    log.info("eval.json written to %s", run_dir)
    return report["acc"]


def split_loader(data: Any, split: str, batch_size: int) -> BatchLoader:
    if split == "test":
        if data.test is None:
            raise UserError("this dataset has no test split; use split=val (the run's held-out images)")
        return data.test
    if split == "val":
        return data.val
    source = data.train
    return BatchLoader(
        source.data,
        batch_size,
        source.mean.flatten(),
        source.std.flatten(),
        shuffle=False,
        drop_last=False,
        channels_last=source.memory_format == torch.channels_last,
        input_size=source.input_size,
    )
