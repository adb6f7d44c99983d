"""Checks of the composed config that run before any data is loaded, so a typo fails in a second.

Each check names the key, the rule and an example value; what can only be checked once the data is
loaded (class counts, image sizes) is checked in cnnlab.data.build.
"""

import glob
import importlib.util
import math
import re
import zipfile
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnlab.config.choices import FLIP_MODES, PAD_MODES, TTA_LEVELS
from cnnlab.config.duration import parse_duration
from cnnlab.errors import UserError, UserErrorExit, install_extra, timm_missing
from cnnlab.folder_lock import busy_run, is_locked
from cnnlab.placement import Placement
from cnnlab.run_folder import (
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RUN_LOCK,
    TRAINED_WEIGHTS,
    find_checkpoint,
    run_dir_of,
)

FINETUNE_MODES = ("full", "head", "gradual")  # how cnnlab.training.finetune.Finetune trains a backbone
AVERAGING_MODES = ("none", "ema", "lookahead")  # trainer.weight_averaging (cnnlab.training.averaging)
NORMALIZATIONS = ("data", "imagenet")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
EVAL_SPLITS = ("test", "val", "train")
EXPORT_FORMATS = ("onnx", "torchscript", "exported")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the export extra: torch.onnx's exporter needs onnxscript
OLDEST_ONNX_OPSET = 18  # the torch.export-based ONNX exporter writes no older operator set
MAX_SAMPLES_PER_CLASS = 64  # columns of samples.png; the figure grows with it
# true/false switches outside `trainer` (a word like "no" would otherwise count as true)
SWITCHES = (
    "dataset.augment.flip",
    "dataset.augment.randaugment",
    "dataset.source.download",
    "optimizer.nesterov",
    "model.bn_frozen_scale",
    "trainer.sync_batchnorm",
    "trainer.no_decay_norm_bias",
    "trainer.tta_every_epoch",
    "trainer.histograms",
    "trainer.log_graph",
    "trainer.channels_last",
    "trainer.deterministic",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _require(ok: bool, key: str, value: Any, rule: str, example: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {rule} (for example {example})")


def _whole(cfg: DictConfig, key: str, minimum: int, example: str, maximum: int | None = None) -> None:
    """`key`, where the config has it, is a whole number in [minimum, maximum]."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None and OmegaConf.select(cfg, key, default="absent") == "absent":
        return
    upper = f" and <= {maximum}" if maximum is not None else ""
    ok = _is_int(value) and value >= minimum and (maximum is None or value <= maximum)
    _require(ok, key, value, f"must be a whole number >= {minimum}{upper}", f"{key}={example}")


def _switch(cfg: DictConfig, key: str, example: str = "true") -> None:
    """`key`, where the config has it, is true or false (a word such as "no" would otherwise count as true)."""
    value = OmegaConf.select(cfg, key, default=False)
    _require(isinstance(value, bool), key, value, "must be true or false", f"{key}={example}")


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    """`key`, where the config has it, names one of `choices`."""
    value = OmegaConf.select(cfg, key, default=choices[0])
    _require(value in choices, key, value, f"must be one of {', '.join(choices)}", f"{key}={choices[-1]}")


def _tta(cfg: DictConfig, key: str) -> None:
    """A TTA level, or true/false as configs wrote it before there were levels."""
    value = OmegaConf.select(cfg, key, default="none")
    levels = ", ".join(TTA_LEVELS)
    rule = f"must be one of {levels} (true and false still mean flip and none)"
    _require(isinstance(value, bool) or value in TTA_LEVELS, key, value, rule, f"{key}=flip")


def _check_device(device: str) -> None:
    _require(bool(_DEVICE.match(device)), "device", device, "must be auto, cpu, cuda, cuda:N or mps", "device=cpu")


def _checkpoint(target: str, names: tuple[str, ...] = (LAST_CHECKPOINT,)) -> None:
    """The checkpoint a user names exists and is one (torch.save writes a zip archive), checked before anything
    is written beside it."""
    path = find_checkpoint(target, names)
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"checkpoint {path} is unreadable (corrupt, truncated or not a checkpoint); "
            "use checkpoints/best.pt or another run"
        )


def check_dataset_root(dataset: DictConfig) -> None:
    """imagefolder has no default root and nothing to download; say so before anything else is loaded."""
    if OmegaConf.is_missing(dataset, "root"):
        raise UserError(
            f"dataset.root is not set for dataset={dataset.name}: "
            "pass dataset.root=/path/to/images (a folder with one subfolder per class)"
        )
    root = dataset.root
    if root is not None and str(root).strip() == "":
        raise UserError("dataset.root is empty: pass dataset.root=/path/to/images, or leave it out for the default")
    if dataset.name == "imagefolder" and not Path(str(root)).expanduser().is_dir():
        raise UserError(f"imagefolder: dataset.root={root} is not a folder; point it at your images")
    if root is not None and Path(str(root)).expanduser().is_file():
        raise UserError(f"dataset.root={root} is a file; point it at a folder (the data set is downloaded there)")


def _check_run_folder(cfg: DictConfig) -> None:
    """A resume needs a checkpoint nobody is writing; a new run must not land on an earlier one."""
    if cfg.resume:
        _checkpoint(cfg.resume)
        run_dir = run_dir_of(cfg.resume)
        if is_locked(run_dir, RUN_LOCK):  # checked before Hydra writes the resume's snapshot and log there
            raise UserError(busy_run(run_dir))
        return
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", default=None)  # present in a single run's callback
    if run_dir is not None:
        folder = Path(str(run_dir)).expanduser()
        if (folder / METRICS_FILE).is_file() or (folder / CHECKPOINTS_DIR).is_dir():
            raise UserError(
                f"hydra.run.dir={run_dir} already holds a run; continue it with cnnlab train resume={run_dir}, "
                "or choose a new folder"
            )


def _check_top_level(cfg: DictConfig) -> None:
    lr, bs, epochs, wd = cfg.lr, cfg.batch_size, cfg.epochs, cfg.weight_decay
    _require(_is_number(lr) and lr > 0, "lr", lr, "must be a number > 0", "lr=0.05")
    _require(_is_int(bs) and bs > 0, "batch_size", bs, "must be a whole number > 0", "batch_size=256")
    _require(_is_int(epochs) and epochs > 0, "epochs", epochs, "must be a whole number > 0", "epochs=10")
    _require(_is_number(wd) and wd >= 0, "weight_decay", wd, "must be a number >= 0", "weight_decay=5e-4")
    _require(_is_int(cfg.seed) and abs(cfg.seed) < 2**63, "seed", cfg.seed, "must be a whole number", "seed=0")
    _switch(cfg, "compile")
    _check_device(str(cfg.device))


def _check_dataset(cfg: DictConfig) -> None:
    val = cfg.dataset.val_size
    _require(
        (_is_int(val) and val >= 0) or (_is_number(val) and 0 <= val < 1),
        "dataset.val_size",
        val,
        "must be a count >= 0 or a fraction in [0, 1)",
        "dataset.val_size=5000",
    )
    _whole(cfg, "dataset.split_seed", 0, "0")
    _whole(cfg, "dataset.train_size", 2, "5000")
    _whole(cfg, "dataset.test_size", 0, "1000")
    _whole(cfg, "dataset.augment.crop_padding", 0, "4")
    _whole(cfg, "dataset.augment.randaugment_ops", 1, "2")
    _whole(cfg, "dataset.augment.randaugment_magnitude", 0, "9", maximum=30)
    _whole(cfg, "dataset.augment.randaugment_group", 1, "32")
    _choice(cfg, "dataset.augment.flip_mode", FLIP_MODES)
    _choice(cfg, "dataset.augment.pad_mode", PAD_MODES)


def _check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    smoothing = trainer.label_smoothing
    _require(
        _is_number(smoothing) and 0 <= smoothing < 1,
        "trainer.label_smoothing",
        smoothing,
        "must be a number in [0, 1)",
        "trainer.label_smoothing=0.1",
    )
    _require(
        str(trainer.amp) in {"auto", "True", "False"},
        "trainer.amp",
        trainer.amp,
        "must be auto, true or false",
        "trainer.amp=auto",
    )
    for key in ("eval_batch_size", "log_every"):
        _whole(cfg, f"trainer.{key}", 1, "10")
    _require(
        trainer.patience is None or (_is_int(trainer.patience) and trainer.patience > 0),
        "trainer.patience",
        trainer.patience,
        "must be null (off) or a whole number of epochs > 0",
        "trainer.patience=3",
    )
    factor = trainer.divergence_factor
    _require(
        factor is None or (_is_number(factor) and factor > 1),
        "trainer.divergence_factor",
        factor,
        "must be null (off) or a number > 1",
        "trainer.divergence_factor=10",
    )
    bias_factor = trainer.get("bias_lr_factor", 1.0)
    _require(
        _is_number(bias_factor) and bias_factor > 0,
        "trainer.bias_lr_factor",
        bias_factor,
        "must be a number > 0",
        "trainer.bias_lr_factor=64",
    )
    if trainer.time_budget is not None:
        parse_duration(trainer.time_budget)
    _tta(cfg, "trainer.tta")


def _check_knobs(cfg: DictConfig) -> None:
    """Gradient clipping, accumulation, MixUp/CutMix and the overfit sanity mode."""
    trainer = cfg.trainer
    clip = trainer.get("gradient_clip_val")
    _require(
        clip is None or (_is_number(clip) and clip > 0),
        "trainer.gradient_clip_val",
        clip,
        "must be null (off) or a gradient norm > 0",
        "trainer.gradient_clip_val=1.0",
    )
    _whole(cfg, "trainer.accumulate_grad_batches", 1, "4")
    _whole(cfg, "trainer.overfit_batches", 0, "2")
    for key in ("mixup_alpha", "cutmix_alpha"):
        alpha = trainer.get(key, 0.0)
        rule = "must be 0 (off) or a Beta distribution parameter > 0"
        _require(_is_number(alpha) and alpha >= 0, f"trainer.{key}", alpha, rule, f"trainer.{key}=0.2")
    prob = trainer.get("mix_prob", 1.0)
    rule = "must be a probability in [0, 1]"
    _require(_is_number(prob) and 0 <= prob <= 1, "trainer.mix_prob", prob, rule, "trainer.mix_prob=0.5")


def _check_parallel(cfg: DictConfig) -> None:
    """Data-parallel training on trainer.devices processes (or torchrun's): what must divide among them."""
    trainer = cfg.trainer
    _whole(cfg, "trainer.devices", 1, "2")
    parse_duration(trainer.get("dist_timeout", "10m"), "trainer.dist_timeout")
    placement = Placement.from_environment()
    processes = placement.world_size if placement is not None else int(trainer.get("devices", 1))
    if processes == 1:
        return
    how = f"torchrun's {processes} processes" if placement is not None else f"trainer.devices={processes}"
    device = str(cfg.device)
    if re.fullmatch(r"cuda:\d+|mps", device):
        raise UserError(
            f"device={device} names one device, but {how} train on several: use device=cuda (process k takes "
            "GPU k; choose which with CUDA_VISIBLE_DEVICES) or device=cpu"
        )
    if trainer.get("overfit_batches", 0):
        raise UserError(f"trainer.overfit_batches is a one-process sanity check: drop {how}")
    if trainer.get("sync_batchnorm", False) and device == "cpu":
        raise UserError("trainer.sync_batchnorm needs CUDA devices (torch has no CPU kernel for it): drop it on CPUs")
    batch = int(cfg.batch_size) * int(trainer.get("accumulate_grad_batches", 1))
    _require(
        batch % processes == 0,
        "batch_size",
        cfg.batch_size,
        f"it is the global batch, split evenly among {how}: give a multiple of {processes}",
        f"batch_size={max(processes, batch - batch % processes)}",
    )


# The package each optional logger needs, checked before any data is read
LOGGER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}


def _check_loggers(cfg: DictConfig) -> None:
    """Each chosen logger is a config with a _target_ (a stray `logger.x=1` would otherwise fail mid-start), and the
    optional ones have their package."""
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:  # logger.tensorboard=null drops one logger
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserError(
                f"logger.{name} is not a logger: choose loggers with logger=<name> or 'logger=[tensorboard,csv]' "
                "(options: tensorboard, csv, wandb, mlflow, none)"
            )
        package = LOGGER_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            raise UserError(f"logger={name} needs {package}, not installed here: {install_extra(name)}")


def _check_averaging(cfg: DictConfig) -> None:
    """trainer.weight_averaging and its modes' settings: an average that moves, a Lookahead that trains."""
    trainer = cfg.trainer
    mode = trainer.get("weight_averaging", "none")
    modes = ", ".join(AVERAGING_MODES)
    _require(
        mode in AVERAGING_MODES,
        "trainer.weight_averaging",
        mode,
        f"must be one of {modes}",
        "trainer.weight_averaging=ema",
    )
    _whole(cfg, "trainer.ema_every", 1, "5")
    _whole(cfg, "trainer.lookahead_steps", 1, "5")
    decay = trainer.get("ema_decay", 0.95)
    rule = "must be a number in [0, 1)"
    _require(_is_number(decay) and 0 <= decay < 1, "trainer.ema_decay", decay, rule, "trainer.ema_decay=0.95")
    alpha = trainer.get("lookahead_alpha", 0.5)
    rule = "must be a number in (0, 1]"
    _require(
        _is_number(alpha) and 0 < alpha <= 1, "trainer.lookahead_alpha", alpha, rule, "trainer.lookahead_alpha=0.5"
    )


def _check_muon(cfg: DictConfig) -> None:
    """optimizer=muon's own keys; torch checks the others when it builds the optimizer."""
    if "muon_lr" not in cfg.optimizer:
        return
    lr, momentum = cfg.optimizer.muon_lr, cfg.optimizer.get("muon_momentum", 0.95)
    _require(_is_number(lr) and lr > 0, "optimizer.muon_lr", lr, "must be a number > 0", "optimizer.muon_lr=0.02")
    rule = "must be a number in [0, 1)"
    _require(
        _is_number(momentum) and 0 <= momentum < 1,
        "optimizer.muon_momentum",
        momentum,
        rule,
        "optimizer.muon_momentum=0.95",
    )
    _switch(cfg, "optimizer.muon_normalize_weights")


def _check_transfer(cfg: DictConfig) -> None:
    """init_from, trainer.finetune and the input size and statistics a pretrained backbone expects."""
    if cfg.get("init_from"):
        _checkpoint(cfg.init_from, TRAINED_WEIGHTS)
    target = str(cfg.model.get("_target_", ""))
    if target.startswith("cnnlab.models.timm_backbone") and importlib.util.find_spec("timm") is None:
        raise timm_missing()  # before any data is loaded
    trainer = cfg.trainer
    mode = trainer.get("finetune", "full")
    _require(
        mode in FINETUNE_MODES,
        "trainer.finetune",
        mode,
        f"must be one of {', '.join(FINETUNE_MODES)}",
        "trainer.finetune=head",
    )
    _whole(cfg, "trainer.head_epochs", 1, "1")
    factor = trainer.get("backbone_lr_factor", 1.0)
    _require(
        _is_number(factor) and 0 < factor <= 1,
        "trainer.backbone_lr_factor",
        factor,
        "must be a number in (0, 1]",
        "trainer.backbone_lr_factor=0.1",
    )
    size = cfg.dataset.get("input_size")
    _require(
        size is None or (_is_int(size) and 8 <= size <= 1024),
        "dataset.input_size",
        size,
        "must be null (the images' own size) or a whole number of pixels in [8, 1024]",
        "dataset.input_size=224",
    )
    normalization = cfg.dataset.get("normalization", "data")
    _require(
        normalization in NORMALIZATIONS,
        "dataset.normalization",
        normalization,
        "must be data or imagenet",
        "dataset.normalization=imagenet",
    )


def _check_scheduler(cfg: DictConfig) -> None:
    """Fractions and factors of the base lr lie in [0, 1]; a step schedule needs steps of at least one epoch."""
    for key, value in cfg.scheduler.items():
        name = f"scheduler.{key}"
        if str(key).endswith(("_fraction", "_factor")) or key == "gamma":
            _require(_is_number(value) and 0 <= value <= 1, name, value, "must be a fraction in [0, 1]", f"{name}=0.1")
        elif key == "step_epochs":
            _require(_is_number(value) and value > 0, name, value, "must be a number of epochs > 0", f"{name}=3")
        elif str(key).endswith("_epochs"):
            _require(_is_number(value) and value >= 0, name, value, "must be a number >= 0", f"{name}=1")


def _check_switches(cfg: DictConfig) -> None:
    for key in SWITCHES:
        _switch(cfg, key)


def validate_train_config(cfg: DictConfig) -> None:
    """Raise UserError naming the first bad value and how to fix it."""
    check_dataset_root(cfg.dataset)
    _check_run_folder(cfg)
    _check_top_level(cfg)
    _check_dataset(cfg)
    dropout = cfg.model.get("dropout", 0.0)
    _require(
        _is_number(dropout) and 0 <= dropout < 1,
        "model.dropout",
        dropout,
        "must be a number in [0, 1)",
        "model.dropout=0.1",
    )
    _check_trainer(cfg)
    _check_knobs(cfg)
    _check_parallel(cfg)
    _check_loggers(cfg)
    _check_averaging(cfg)
    _check_muon(cfg)
    _check_transfer(cfg)
    _check_scheduler(cfg)
    _check_switches(cfg)


def _required(cfg: DictConfig, key: str, what: str, example: str) -> str:
    """The value of a key the user must give (??? in the config), as a string."""
    if OmegaConf.is_missing(cfg, key) or str(cfg[key]).strip() in ("", "None"):
        raise UserError(f"{key} is required: pass {key}=<{what}> (for example {example})")
    return str(cfg[key])


def _check_checkpoint_use(cfg: DictConfig, example: str) -> None:
    """What eval, predict and export share: a checkpoint that is one, a device, and the trust_code switch."""
    ckpt = _required(cfg, "ckpt", "run folder or .pt file", example)
    _checkpoint(ckpt, TRAINED_WEIGHTS)
    _check_device(str(cfg.device))
    _switch(cfg, "trust_code")


def validate_eval_config(cfg: DictConfig) -> None:
    """`cnnlab eval`: the checkpoint exists and the split and flags are known."""
    _check_checkpoint_use(cfg, "cnnlab eval ckpt=outputs/runs/...")
    _require(cfg.split in EVAL_SPLITS, "split", cfg.split, f"must be one of {', '.join(EVAL_SPLITS)}", "split=val")
    _tta(cfg, "tta")
    _require(
        cfg.batch_size is None or (_is_int(cfg.batch_size) and cfg.batch_size > 0),
        "batch_size",
        cfg.batch_size,
        "must be null (the run's eval batch size) or a whole number > 0",
        "batch_size=512",
    )
    root = cfg.data_root
    _require(
        root is None or Path(str(root)).expanduser().is_dir(),
        "data_root",
        root,
        "must be null (the run's own data) or an existing folder",
        "data_root=/path/to/images",
    )


def validate_predict_config(cfg: DictConfig) -> None:
    """`cnnlab predict`: a checkpoint, inputs that name at least one path, and sensible counts."""
    _check_checkpoint_use(cfg, "cnnlab predict ckpt=outputs/runs/... inputs=photos/")
    inputs = _required(cfg, "inputs", "image file, folder or glob", "inputs=photos/ or 'inputs=photos/*.jpg'")
    path = Path(inputs).expanduser()
    if not path.exists() and not glob.glob(str(path), recursive=True):
        raise UserError(
            f"inputs={inputs} matches no file or folder; pass an image file, a folder of images "
            "or a quoted glob such as 'inputs=photos/*.jpg'"
        )
    _whole(cfg, "top_k", 1, "5")
    _whole(cfg, "batch_size", 1, "256")
    _whole(cfg, "gallery", 0, "32")


def _check_onnx_packages() -> None:
    """Looked up, not imported: onnx alone takes over a second to import."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"format=onnx needs {', '.join(missing)}, not installed here: "
            f"{install_extra('export')}, or choose format=exported"
        )


def validate_export_config(cfg: DictConfig) -> None:
    """`cnnlab export`: a checkpoint, a known format with its packages, and a check that can be run."""
    _check_checkpoint_use(cfg, "cnnlab export ckpt=outputs/runs/... format=onnx")
    formats = ", ".join(EXPORT_FORMATS)
    _require(cfg.format in EXPORT_FORMATS, "format", cfg.format, f"must be one of {formats}", "format=onnx")
    if cfg.format == "onnx":
        _check_onnx_packages()
    opset = cfg.opset
    _require(
        opset is None or (_is_int(opset) and opset >= OLDEST_ONNX_OPSET),
        "opset",
        opset,
        f"must be null (the exporter's default) or a whole number >= {OLDEST_ONNX_OPSET}",
        f"opset={OLDEST_ONNX_OPSET}",
    )
    _whole(cfg, "check_inputs", 1, "8", maximum=4096)
    for key, example in (("atol", "1e-4"), ("rtol", "1e-3")):
        _require(_is_number(cfg[key]) and cfg[key] >= 0, key, cfg[key], "must be a number >= 0", f"{key}={example}")


def validate_data_config(cfg: DictConfig) -> None:
    """`cnnlab data`: the data set can be found and the sample count makes sense."""
    check_dataset_root(cfg.dataset)
    _whole(cfg, "samples_per_class", 1, "8", maximum=MAX_SAMPLES_PER_CLASS)


def validate_bench_config(cfg: DictConfig) -> None:
    """`cnnlab bench`: the train config it measures, and a finite time box per measurement."""
    if cfg.resume:
        raise UserError("cnnlab bench measures a configuration, not a run: drop resume= and give its overrides")
    validate_train_config(cfg)
    seconds = cfg.bench.seconds
    _require(
        _is_number(seconds) and 0 < seconds <= 600,
        "bench.seconds",
        seconds,
        "must be a number of seconds in (0, 600]",
        "bench.seconds=3",
    )
    _switch(cfg, "bench.compile", example="false")


def validate_sweep_config(cfg: DictConfig) -> None:
    """Before a sweep starts: its launcher's settings, and no grid sweep over an earlier one's folder."""
    n_jobs = OmegaConf.select(cfg, "hydra.launcher.n_jobs", default=None)
    _require(
        n_jobs is None or (_is_int(n_jobs) and n_jobs != 0),
        "hydra.launcher.n_jobs",
        n_jobs,
        "must be a whole number of parallel trials (-1: one per core)",
        "hydra.launcher.n_jobs=2",
    )
    sweep_dir = Path(str(cfg.hydra.sweep.dir)).expanduser()
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    if (sweep_dir / "multirun.yaml").is_file() and "cnnlab_sweeper" not in sweeper:
        raise UserError(
            f"hydra.sweep.dir={cfg.hydra.sweep.dir} already holds a sweep, and a grid sweep cannot continue one "
            "(its trials would be overwritten); choose a new hydra.sweep.dir"
        )


def validate_lr_find_config(cfg: DictConfig) -> None:
    """`cnnlab lr-find`: the train config it tests, and a rising range of learning rates."""
    if cfg.resume:
        raise UserError("cnnlab lr-find tests a configuration, not a run: drop resume= and give its overrides")
    validate_train_config(cfg)
    settings = cfg.lr_find
    start, end = settings.start_lr, settings.end_lr
    _require(
        _is_number(start) and _is_number(end) and 0 < start < end,
        "lr_find.start_lr",
        start,
        f"must be a number > 0 below lr_find.end_lr={end}",
        "lr_find.start_lr=1e-6",
    )
    _whole(cfg, "lr_find.steps", 20, "200")
    smoothing = settings.smoothing
    rule = "must be a number in [0, 1)"
    _require(
        _is_number(smoothing) and 0 <= smoothing < 1, "lr_find.smoothing", smoothing, rule, "lr_find.smoothing=0.98"
    )
    factor = settings.diverge_factor
    rule = "must be a number > 1"
    _require(_is_number(factor) and factor > 1, "lr_find.diverge_factor", factor, rule, "lr_find.diverge_factor=4")


VALIDATORS = {
    "train": validate_train_config,
    "eval": validate_eval_config,
    "bench": validate_bench_config,
    "lr_find": validate_lr_find_config,
    "predict": validate_predict_config,
    "export": validate_export_config,
}


class ValidateBeforeRun(Callback):
    """Validates a run's config before Hydra creates its folder, so a typo leaves nothing behind.

    A sweep's settings are checked before it starts; its jobs are checked by the task itself, since
    their values are only known once each job starts.
    """

    def __init__(self, task: str) -> None:
        self.validate = VALIDATORS[task]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._checked(self.validate, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._checked(validate_sweep_config, config)

    @staticmethod
    def _checked(validate: Any, config: DictConfig) -> None:
        try:
            validate(config)
        except UserError as e:
            raise UserErrorExit(e) from e  # Hydra turns a callback's Exception into a warning and goes on
