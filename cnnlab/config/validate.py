"""Checks of the composed config that run before any data is loaded, so a typo fails in a second."""

import re
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnlab.config.duration import parse_duration
from cnnlab.errors import UserError, UserErrorExit
from cnnlab.folder_lock import busy_run, is_locked
from cnnlab.run_folder import RUN_LOCK, TRAINED_WEIGHTS, find_checkpoint, run_dir_of

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
EVAL_SPLITS = ("test", "val", "train")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _require(ok: bool, key: str, value: Any, rule: str, example: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {rule} (for example {example})")


def _check_device(device: str) -> None:
    _require(bool(_DEVICE.match(device)), "device", device, "must be auto, cpu, cuda, cuda:N or mps", "device=cpu")


def check_dataset_root(dataset: DictConfig) -> None:
    """imagefolder has no default root and nothing to download; say so before anything else is loaded."""
    if OmegaConf.is_missing(dataset, "root"):
        raise UserError(
            f"dataset.root is not set for dataset={dataset.name}: "
            "pass dataset.root=/path/to/images (a folder with one subfolder per class)"
        )
    if dataset.name == "imagefolder" and not Path(str(dataset.root)).expanduser().is_dir():
        raise UserError(f"imagefolder: dataset.root={dataset.root} is not a folder; point it at your images")


def validate_train_config(cfg: DictConfig) -> None:
    """Raise UserError naming the first bad value and how to fix it."""
    check_dataset_root(cfg.dataset)
    if cfg.resume:
        find_checkpoint(cfg.resume)
        run_dir = run_dir_of(cfg.resume)
        if is_locked(run_dir, RUN_LOCK):  # checked before Hydra writes the resume's snapshot and log there
            raise UserError(busy_run(run_dir))
    lr, bs, epochs, wd = cfg.lr, cfg.batch_size, cfg.epochs, cfg.weight_decay
    _require(_is_number(lr) and lr > 0, "lr", lr, "must be a number > 0", "lr=0.05")
    _require(_is_int(bs) and bs > 0, "batch_size", bs, "must be a whole number > 0", "batch_size=256")
    _require(_is_int(epochs) and epochs > 0, "epochs", epochs, "must be a whole number > 0", "epochs=10")
    _require(_is_number(wd) and wd >= 0, "weight_decay", wd, "must be a number >= 0", "weight_decay=5e-4")
    _require(_is_int(cfg.seed), "seed", cfg.seed, "must be a whole number", "seed=0")
    _require(isinstance(cfg.compile, bool), "compile", cfg.compile, "must be true or false", "compile=true")
    _check_device(str(cfg.device))

    val = cfg.dataset.val_size
    _require(
        (_is_int(val) and val >= 0) or (_is_number(val) and 0 <= val < 1),
        "dataset.val_size",
        val,
        "must be a count >= 0 or a fraction in [0, 1)",
        "dataset.val_size=5000",
    )
    dropout = cfg.model.get("dropout", 0.0)
    _require(
        _is_number(dropout) and 0 <= dropout < 1,
        "model.dropout",
        dropout,
        "must be a number in [0, 1)",
        "model.dropout=0.1",
    )
    smoothing = cfg.trainer.label_smoothing
    _require(
        _is_number(smoothing) and 0 <= smoothing < 1,
        "trainer.label_smoothing",
        smoothing,
        "must be a number in [0, 1)",
        "trainer.label_smoothing=0.1",
    )
    _require(
        str(cfg.trainer.amp) in {"auto", "True", "False"},
        "trainer.amp",
        cfg.trainer.amp,
        "must be auto, true or false",
        "trainer.amp=auto",
    )
    for key in ("eval_batch_size", "log_every"):
        value = cfg.trainer[key]
        _require(
            _is_int(value) and value > 0, f"trainer.{key}", value, "must be a whole number > 0", f"trainer.{key}=10"
        )
    patience = cfg.trainer.patience
    _require(
        patience is None or (_is_int(patience) and patience > 0),
        "trainer.patience",
        patience,
        "must be null (off) or a whole number of epochs > 0",
        "trainer.patience=3",
    )
    factor = cfg.trainer.divergence_factor
    _require(
        factor is None or (_is_number(factor) and factor > 1),
        "trainer.divergence_factor",
        factor,
        "must be null (off) or a number > 1",
        "trainer.divergence_factor=10",
    )
    for key, value in cfg.scheduler.items():
        if str(key).endswith(("_fraction", "_factor", "_epochs")) or key == "gamma":
            upper = 1 if str(key).endswith("_fraction") else float("inf")
            _require(
                _is_number(value) and 0 <= value <= upper,
                f"scheduler.{key}",
                value,
                "must be a fraction in [0, 1]" if upper == 1 else "must be a number >= 0",
                f"scheduler.{key}=0.1",
            )
    if cfg.trainer.time_budget is not None:
        parse_duration(cfg.trainer.time_budget)
    for key in ("histograms", "log_graph", "tta", "channels_last"):
        value = cfg.trainer[key]
        _require(isinstance(value, bool), f"trainer.{key}", value, "must be true or false", f"trainer.{key}=true")


def validate_eval_config(cfg: DictConfig) -> None:
    """`cnnlab eval`: the checkpoint exists and the split and flags are known."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise UserError(
            "ckpt is required: pass ckpt=<run folder or .pt file> (for example cnnlab eval ckpt=outputs/runs/...)"
        )
    find_checkpoint(cfg.ckpt, TRAINED_WEIGHTS)
    _require(cfg.split in EVAL_SPLITS, "split", cfg.split, f"must be one of {', '.join(EVAL_SPLITS)}", "split=val")
    _require(isinstance(cfg.tta, bool), "tta", cfg.tta, "must be true or false", "tta=true")
    _require(
        cfg.batch_size is None or (_is_int(cfg.batch_size) and cfg.batch_size > 0),
        "batch_size",
        cfg.batch_size,
        "must be null (the run's eval batch size) or a whole number > 0",
        "batch_size=512",
    )
    _check_device(str(cfg.device))
    _require(isinstance(cfg.trust_code, bool), "trust_code", cfg.trust_code, "must be true or false", "trust_code=true")


def validate_data_config(cfg: DictConfig) -> None:
    """`cnnlab data`: the data set can be found and the sample count makes sense."""
    check_dataset_root(cfg.dataset)
    per_class = cfg.samples_per_class
    _require(
        _is_int(per_class) and per_class > 0,
        "samples_per_class",
        per_class,
        "must be a whole number > 0",
        "samples_per_class=8",
    )


def validate_bench_config(cfg: DictConfig) -> None:
    """`cnnlab bench`: the train config it measures, and a finite time box per measurement."""
    validate_train_config(cfg)
    seconds = cfg.bench.seconds
    _require(
        _is_number(seconds) and 0 < seconds <= 600,
        "bench.seconds",
        seconds,
        "must be a number of seconds in (0, 600]",
        "bench.seconds=3",
    )
    _require(
        isinstance(cfg.bench.compile, bool),
        "bench.compile",
        cfg.bench.compile,
        "must be true or false",
        "bench.compile=false",
    )


VALIDATORS = {"train": validate_train_config, "eval": validate_eval_config, "bench": validate_bench_config}


class ValidateBeforeRun(Callback):
    """Validates a single run's config before Hydra creates its folder, so a typo leaves nothing behind.

    Sweep jobs are checked by the task itself, since their values are only known once each job starts.
    """

    def __init__(self, task: str) -> None:
        self.validate = VALIDATORS[task]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self.validate(config)
        except UserError as e:
            raise UserErrorExit(e) from e  # Hydra turns a callback's Exception into a warning and goes on
