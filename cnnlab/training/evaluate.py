"""Evaluate a checkpoint on a split with the data and model settings stored in it; write eval.json."""

import logging
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from cnnlab.atomic import atomic_json_dump
from cnnlab.checkpoints.store import load_checkpoint
from cnnlab.checkpoints.trust import check_config_code
from cnnlab.data.build import build_data
from cnnlab.data.loader import BatchLoader
from cnnlab.device import autocast_dtype, resolve_device
from cnnlab.errors import UserError
from cnnlab.run_folder import TRAINED_WEIGHTS, find_checkpoint
from cnnlab.tracking.terminal import print_evaluation
from cnnlab.training.components import build_model
from cnnlab.training.metrics import classification_report, predict
from cnnlab.training.resume import flatten

log = logging.getLogger("cnnlab")


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path) -> float:
    """Print and save the evaluation; return the accuracy."""
    path = find_checkpoint(cfg.ckpt, TRAINED_WEIGHTS)
    checkpoint = load_checkpoint(path)
    check_config_code(checkpoint["config"], path, bool(cfg.trust_code))
    run_cfg = OmegaConf.create(checkpoint["config"])
    run_cfg.dataset = with_local_data_settings(run_cfg.dataset)
    if cfg.data_root is not None:
        run_cfg.dataset.root = str(cfg.data_root)
    elif run_cfg.dataset.name == "imagefolder" and not Path(str(run_cfg.dataset.root)).expanduser().is_dir():
        raise UserError(
            f"the run's images were in {run_cfg.dataset.root}, which is no longer a folder; "
            "pass data_root=<where they are now>"
        )
    device = resolve_device(str(cfg.device))
    batch_size = cfg.batch_size or run_cfg.trainer.eval_batch_size
    channels_last = bool(run_cfg.trainer.channels_last)
    data = build_data(run_cfg.dataset, run_cfg.batch_size, batch_size, device, run_cfg.seed, channels_last)
    loader = split_loader(data, cfg.split, batch_size)
    model = build_model(run_cfg, data.input_shape, len(data.classes))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])[:160]
        raise UserError(
            f"checkpoint {path} holds weights of another model than its config describes ({detail}); "
            "evaluate the checkpoint written by the run that trained it"
        ) from e
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    logits, labels = predict(model, loader, autocast_dtype(device, run_cfg.trainer.amp), flip_tta=cfg.tta)
    report = classification_report(logits, labels, len(data.classes))
    result: dict[str, Any] = {
        "checkpoint": str(path),
        "epoch": checkpoint["epoch"],
        "split": cfg.split,
        "tta": cfg.tta,
        **report,
        "per_class_acc": dict(zip(data.classes, report["per_class_acc"])),
        "classes": data.classes,
    }
    atomic_json_dump(result, run_dir / "eval.json")
    print_evaluation(
        result, data.classes, title=f"{path} on {cfg.split} ({report['count']} images{', flip TTA' if cfg.tta else ''})"
    )
    log.info("eval.json written to %s", run_dir)
    return report["acc"]


LOCATION_KEYS = ("root", "cache_dir", "download", "url", "md5")


def with_local_data_settings(saved: DictConfig) -> DictConfig:
    """This machine's config of the checkpoint's dataset, with the checkpoint's values for its other settings.

    Where data lives and comes from (root, cache_dir, download, url, md5) and what loads it (_target_)
    are this machine's: a checkpoint records the training machine's folders, and taken from a shared
    file they would let it choose where to download and unpack. The split and augmentation settings
    are the checkpoint's. An image folder keeps its recorded root: it has no default, and reading a
    folder as images writes nothing there.
    """
    local = OmegaConf.create(
        OmegaConf.to_container(compose(config_name="train", overrides=[f"dataset={saved.name}"]).dataset)
    )
    recorded = flatten(OmegaConf.to_container(saved))
    for key, value in flatten(OmegaConf.to_container(local)).items():
        name = key.rsplit(".", 1)[-1]
        keep_local = name == "_target_" or (name in LOCATION_KEYS and value != "???")
        if not keep_local and key in recorded:
            OmegaConf.update(local, key, recorded[key])
    return local


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
    )
