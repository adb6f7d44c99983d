"""Assemble one training run from the composed config: data, model, optimizer, schedule, sinks, trainer."""

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.checkpoints.store import CheckpointStore
from cnnlab.data.build import build_data
from cnnlab.models.stats import count_macs, count_parameters
from cnnlab.tracking.metrics_file import MetricsFileSink
from cnnlab.tracking.tensorboard import TensorBoardSink
from cnnlab.tracking.terminal import TerminalSink
from cnnlab.tracking.tracker import Tracker
from cnnlab.training.device import autocast_dtype, resolve_device
from cnnlab.training.optim import build_optimizer
from cnnlab.training.trainer import Trainer

log = logging.getLogger("cnnlab")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train, validate every epoch, test once at the end; return the best validation accuracy.

    Expects a config that passed validate_train_config (the train task checks it first).
    """
    device = resolve_device(str(cfg.device))
    seed_everything(cfg.seed)
    channels_last = bool(cfg.trainer.channels_last)
    data = build_data(cfg.dataset, cfg.batch_size, cfg.trainer.eval_batch_size, device, cfg.seed, channels_last)
    channels, height, width = data.input_shape
    model = instantiate(cfg.model, in_channels=channels, num_classes=len(data.classes), image_size=[height, width])
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    info: dict[str, Any] = {
        "model": cfg.model._target_.rsplit(".", 1)[-1], "params": count_parameters(model),
        "macs": count_macs(model, data.input_shape), "dataset": cfg.dataset.name, "train_size": len(data.train.data),
        "val_size": len(data.val.data), "test_size": len(data.test.data) if data.test else None, "device": str(device),
    }
    optimizer = build_optimizer(instantiate(cfg.optimizer), model, cfg.trainer.no_decay_norm_bias)
    steps = len(data.train)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=cfg.epochs * steps, steps_per_epoch=steps)
    runner = torch.compile(model) if cfg.compile else model
    tracker = Tracker([TerminalSink(), TensorBoardSink(run_dir), MetricsFileSink(run_dir / "metrics.json")])
    trainer = Trainer(
        runner, optimizer, scheduler, device=device, tracker=tracker, label_smoothing=cfg.trainer.label_smoothing,
        amp_dtype=autocast_dtype(device, cfg.trainer.amp), log_every=cfg.trainer.log_every,
        checkpoints=CheckpointStore(run_dir / "checkpoints", OmegaConf.to_container(cfg, resolve=True)),
    )
    summary: dict[str, Any] = {**info, "run_dir": str(run_dir), "status": "failed"}
    with tracker:
        tracker.run_started(info)
        try:
            result = trainer.fit(data.train, data.val, cfg.epochs)
            test = trainer.test(data.test) if data.test is not None else {}
            summary.update(
                status="completed", best_val_acc=result.best_val_acc, epochs_completed=result.epochs_completed,
                train_time_s=result.train_time_s, test_acc=test.get("acc"), test_loss=test.get("loss"),
            )
        except KeyboardInterrupt:
            summary["status"] = "interrupted"
            raise
        finally:
            summary.setdefault("best_val_acc", trainer.best_val_acc)
            summary.setdefault("epochs_completed", trainer.epoch)
            summary.setdefault("train_time_s", trainer.train_time_s)
            tracker.run_ended(summary)
    return result.best_val_acc
