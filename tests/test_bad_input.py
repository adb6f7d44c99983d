"""The bad-input catalogue: every mistake a user can make on the command line, run through the real CLI.

Each case must exit with code 2 and print exactly one line, `cnnlab: error: ...`, that names the
problem and the fix, with no Python traceback. Paths in a case's arguments are placeholders filled in
from a shared set of files (a finished run, a broken image folder, a damaged checkpoint, ...).

Most cases call the console script's function (cnnlab.cli:main) in this process, with the command's
environment, folder and arguments: a new interpreter per case spent 5-8 s importing torch, for
mistakes that fail in well under a second. The cases in REAL_PROCESS, one per way an error reaches
the user, run the installed `cnnlab` command itself.
"""

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import call_cli
from conftest import run_cli as run

SMOKE = ["experiment=smoke", "dataset.train_size=400", "dataset.val_size=100", "dataset.test_size=100", "epochs=1"]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    problem: str  # words that name what is wrong
    fix: str  # words that say what to do


CASES = {
    # config groups and keys
    "unknown model": Case(("train", "model=nope"), "unknown model 'nope'", "efficient, efficient_tiny"),
    "unknown dataset": Case(("train", "dataset=cifar100"), "unknown dataset 'cifar100'", "cifar10, fashion_mnist"),
    "unknown experiment": Case(("train", "experiment=nope"), "unknown experiment 'nope'", "smoke"),
    "unknown sampler": Case(("-m", "sweeper=bayes"), "unknown sweeper 'bayes'", "gp, grid"),
    "unknown pruner": Case(("-m", "sweeper=tpe", "pruner=asha"), "unknown pruner 'asha'", "hyperband, median"),
    "unknown key": Case(("train", "lrr=0.1"), "unknown key lrr", "did you mean lr?"),
    "unknown nested key": Case(("train", "trainer.patiense=3"), "unknown key trainer.patiense", "trainer.patience"),
    "unknown task": Case(("trian",), "unknown task 'trian'", "train, eval, data, bench, lr-find, report"),
    "unparsable override": Case(("train", "lr=tag(log"), "cannot parse override 'lr=tag(log'", "brackets and quotes"),
    # wrong types and ranges
    "lr not a number": Case(("train", "lr=abc"), "lr='abc' is invalid", "lr=0.05"),
    "lr zero": Case(("train", "lr=0"), "lr=0 is invalid: must be a number > 0", "lr=0.05"),
    "lr negative": Case(("train", "lr=-0.1"), "lr=-0.1 is invalid", "lr=0.05"),
    "batch_size zero": Case(("train", "batch_size=0"), "batch_size=0 is invalid", "batch_size=256"),
    "batch_size fraction": Case(("train", "batch_size=1.5"), "must be a whole number > 0", "batch_size=256"),
    "epochs negative": Case(("train", "epochs=-1"), "epochs=-1 is invalid", "epochs=10"),
    "dropout one": Case(
        ("train", "model.dropout=1.0"), "model.dropout=1.0 is invalid: must be a number in [0, 1)", "model.dropout=0.1"
    ),
    "dropout negative": Case(("train", "model.dropout=-0.1"), "model.dropout=-0.1 is invalid", "model.dropout=0.1"),
    "seed not a number": Case(("train", "seed=abc"), "seed='abc' is invalid", "seed=0"),
    "unknown device": Case(("train", "device=gpu"), "device='gpu' is invalid", "device=cpu"),
    "bench time box zero": Case(("bench", "bench.seconds=0"), "bench.seconds=0 is invalid", "bench.seconds=3"),
    "bench time box endless": Case(("bench", "bench.seconds=inf"), "bench.seconds=inf is invalid", "(0, 600]"),
    "bad time budget": Case(("train", "trainer.time_budget=soon"), "trainer.time_budget='soon' is invalid", "10m"),
    # data-parallel training
    "devices zero": Case(("train", "trainer.devices=0"), "trainer.devices=0 is invalid", "trainer.devices=2"),
    "batch not divisible among processes": Case(
        ("train", "trainer.devices=3", "batch_size=256", "device=cpu"), "split evenly among trainer.devices=3", "255"
    ),
    "one GPU for several processes": Case(
        ("train", "trainer.devices=2", "device=cuda:1"), "device=cuda:1 names one device", "use device=cuda"
    ),
    "sync batchnorm on cpu": Case(
        ("train", "trainer.devices=2", "device=cpu", "trainer.sync_batchnorm=true"), "needs CUDA devices", "drop it"
    ),
    "bad collective timeout": Case(("train", "trainer.dist_timeout=never"), "trainer.dist_timeout='never'", "10m"),
    "schedule fraction": Case(
        ("train", "scheduler.warmup_fraction=2"),
        "scheduler.warmup_fraction=2 is invalid",
        "scheduler.warmup_fraction=0.1",
    ),
    "optimizer refuses": Case(
        ("train", *SMOKE, "optimizer.momentum=-1"), "Invalid momentum value: -1", "optimizer.* overrides"
    ),
    "val_size over the data": Case(
        ("train", *SMOKE, "dataset.val_size=500"),
        "dataset.val_size=500 leaves no training images out of 400",
        "between 1 and 399",
    ),
    "model too deep for the input": Case(
        (
            "train",
            *SMOKE,
            "dataset.source.image_size=28",
            "model=efficient",
            "model.widths=[8,8,8,8,8,8]",
            "model.depths=[1,1,1,1,1,1]",
            "model.blocks=[ds,ds,ds,ds,ds,ds]",
            "model.se_ratio=0.25",
        ),
        "5 max-pooled stages, too many for (28, 28) inputs",
        "drop a stage",
    ),
    # data on disk
    "imagefolder without root": Case(
        ("train", "dataset=imagefolder"), "dataset.root is not set", "dataset.root=/path/to/images"
    ),
    "missing dataset folder": Case(
        ("train", "dataset=imagefolder", "dataset.root={tmp}/no-such-folder"),
        "no-such-folder is not a folder",
        "point it at your images",
    ),
    "empty class folder": Case(
        ("train", *SMOKE, "dataset=imagefolder", "dataset.root={images_with_empty_class}"),
        "has no images",
        "add some or remove the folder",
    ),
    "unsupported channels": Case(
        ("train", *SMOKE, "dataset=imagefolder", "dataset.root={images}", "dataset.source.channels=2"),
        "dataset.source.channels=2 is invalid",
        "use 1 (grayscale) or 3 (RGB)",
    ),
    "cifar10 download fails": Case(
        ("train", "dataset=cifar10", "dataset.root={tmp}/nodata", "dataset.source.url=file:///nonexistent.tar.gz"),
        "the download failed",
        "dataset=synthetic",
    ),
    "cifar10 missing, download off": Case(
        ("train", "dataset=cifar10", "dataset.root={tmp}/empty", "dataset.source.download=false"),
        "(download is off)",
        "dataset=synthetic",
    ),
    # devices and folders
    "cuda without cuda": Case(("train", *SMOKE, "device=cuda"), "CUDA is not available here", "device=cpu"),
    "output folder under a file": Case(
        ("train", *SMOKE, "hydra.run.dir={a_file}/run"), "cannot use {a_file}/run: Not a directory", "hydra.run.dir="
    ),
    # checkpoints and resume
    "resume without checkpoint": Case(
        ("train", "resume={run_without_checkpoint}"), "no checkpoint in", "start it again"
    ),
    "resume of a missing folder": Case(
        ("train", "resume={tmp}/no-such-run"), "no-such-run does not exist", "pass a run folder"
    ),
    "corrupt checkpoint": Case(
        ("train", "resume={corrupt_run}"),
        "is unreadable (corrupt, truncated or not a checkpoint)",
        "use checkpoints/best.pt",
    ),
    "truncated checkpoint": Case(("eval", "ckpt={truncated_checkpoint}"), "is unreadable", "use checkpoints/best.pt"),
    "checkpoint from another model": Case(
        ("train", "resume={run_with_foreign_checkpoint}"),
        "model._target_: cnnlab.models.baselines.SimpleCNN -> cnnlab.models.efficient.EfficientCNN",
        "drop those overrides",
    ),
    "weights of another model": Case(
        ("eval", "ckpt={mismatched_weights}"),
        "holds weights of another model",
        "the checkpoint written by the run that trained it",
    ),
    "resume with other channels": Case(
        ("train", "resume={run}", "dataset.source.channels=1"),
        "dataset.source.channels: 3 -> 1",
        "start a new run without resume=",
    ),
    "resume with other settings": Case(
        ("train", "resume={run}", "lr=0.5"), "with different settings (lr: 0.1 -> 0.5", "only epochs may be raised"
    ),
    "checkpoint with a code payload": Case(
        ("eval", "ckpt={malicious_checkpoint}"),
        "was refused: it asks to import code",
        "only load checkpoints written by cnnlab",
    ),
    "plain pickle with a code payload": Case(
        ("eval", "ckpt={malicious_pickle}"), "is unreadable", "use checkpoints/best.pt"
    ),
    "checkpoint config naming code": Case(
        ("eval", "ckpt={foreign_target_checkpoint}"), "asks to build 'os.system'", "trust_code=true"
    ),
    "checkpoint config splicing code in": Case(
        ("eval", "ckpt={interpolating_checkpoint}"),
        "holds an interpolation ('${{payload}}')",
        "only evaluate checkpoints written by cnnlab",
    ),
    "run folder naming code": Case(
        ("train", "resume={run_naming_code}"),
        "sets 'model._target_=builtins.exec'",
        "pass that override on the command line yourself",
    ),
    "eval without ckpt": Case(("eval",), "ckpt is required", "ckpt=<run folder or .pt file>"),
    "eval split": Case(("eval", "ckpt={run}", "split=holdout"), "split='holdout' is invalid", "split=val"),
    "one class": Case(
        ("train", *SMOKE, "dataset=imagefolder", "dataset.root={one_class_images}", "dataset.val_size=1"),
        "only 1 class has training images (cat)",
        "a classifier needs at least 2",
    ),
    "synthetic with one class": Case(
        ("train", *SMOKE, "dataset.source.num_classes=1"), "dataset.source.num_classes=1 is invalid", "num_classes=10"
    ),
    "test class missing from train": Case(
        ("train", *SMOKE, "dataset=imagefolder", "dataset.root={images_with_unknown_test_class}", "dataset.val_size=1"),
        "has class folders that train/ lacks (bird)",
        "add them to train/ or remove them from test/",
    ),
    "empty dataset root": Case(
        ("train", "dataset=imagefolder", "dataset.root="), "dataset.root is empty", "dataset.root=/path"
    ),
    "crop larger than the images": Case(
        ("train", *SMOKE, "dataset.augment.crop_padding=100"),
        "crop_padding=100 is invalid: the images are 32x32",
        "at most 16",
    ),
    "a word for a switch": Case(
        ("train", "dataset.augment.flip=no"), "dataset.augment.flip='no' is invalid", "dataset.augment.flip=true"
    ),
    "infinite learning rate": Case(("train", "lr=inf"), "lr=inf is invalid", "lr=0.05"),
    "schedule factor above one": Case(
        ("train", "scheduler.end_factor=50"), "scheduler.end_factor=50 is invalid: must be a fraction in [0, 1]", "0.1"
    ),
    "step schedule of zero epochs": Case(
        ("train", "scheduler=step", "scheduler.step_epochs=0"), "scheduler.step_epochs=0 is invalid", "step_epochs=3"
    ),
    "model widths not a list": Case(
        ("train", *SMOKE, "model.widths=16"), "model.widths=16 is invalid", "model.widths=[32,64,128,256]"
    ),
    "baseline channels of zero": Case(
        ("train", *SMOKE, "model=simple_cnn", "model.channels=[0,64]"), "model.channels=[0, 64] is invalid", "[32,64]"
    ),
    "time budget not a number": Case(
        ("train", "trainer.time_budget=nan"), "trainer.time_budget=nan is invalid", "at least 1 second"
    ),
    "resume of a file that is no checkpoint": Case(
        ("train", "resume={a_file}"),
        "is unreadable (corrupt, truncated or not a checkpoint)",
        "use checkpoints/best.pt",
    ),
    "writing over a finished run": Case(
        ("train", "hydra.run.dir={run}"), "already holds a run", "cnnlab train resume="
    ),
    "too many samples per class": Case(
        ("data", "dataset=synthetic", "samples_per_class=10000"), "samples_per_class=10000 is invalid", "<= 64"
    ),
    "eval of moved images": Case(("eval", "ckpt={run}", "data_root={tmp}/moved"), "data_root=", "an existing folder"),
    # predict
    "predict without inputs": Case(
        ("predict", "ckpt={run}"), "inputs is required", "inputs=<image file, folder or glob>"
    ),
    "predict of a pattern matching nothing": Case(
        ("predict", "ckpt={run}", "inputs={tmp}/no-such/*.png"),
        "inputs={tmp}/no-such/*.png matches no file or folder",
        "'inputs=photos/*.jpg'",
    ),
    "predict of a folder without images": Case(
        ("predict", "ckpt={run}", "inputs={images_with_empty_class}/dog"), "has no images", "a folder of images"
    ),
    "predict top_k of zero": Case(
        ("predict", "ckpt={run}", "inputs={images}", "top_k=0"), "top_k=0 is invalid", "top_k=5"
    ),
    "predict gallery negative": Case(
        ("predict", "ckpt={run}", "inputs={images}", "gallery=-1"), "gallery=-1 is invalid", "gallery=32"
    ),
    # export
    "export without ckpt": Case(("export",), "ckpt is required", "ckpt=<run folder or .pt file>"),
    "export of a file that is no checkpoint": Case(
        ("export", "ckpt={a_file}"), "is unreadable (corrupt, truncated or not a checkpoint)", "checkpoints/best.pt"
    ),
    "unknown export format": Case(
        ("export", "ckpt={run}", "format=tflite"), "format='tflite' is invalid", "onnx, torchscript, exported"
    ),
    "export tolerance negative": Case(("export", "ckpt={run}", "atol=-1"), "atol=-1 is invalid", "atol=1e-4"),
    "onnx opset too old": Case(("export", "ckpt={run}", "opset=11"), "opset=11 is invalid", "opset=18"),
    "unknown option": Case(("train", "--foo"), "unknown option --foo", "key=value"),
    "override with a space": Case(("train", "lr", "0.1"), "'lr' is not an override", "lr=0.1"),
    "flag without its value": Case(("eval", "--cfg"), "--cfg needs a value", "job, hydra or all"),
    # transfer learning
    "unknown finetune mode": Case(
        ("train", "trainer.finetune=partial"), "trainer.finetune='partial' is invalid", "head"
    ),
    "backbone lr factor zero": Case(
        ("train", "trainer.backbone_lr_factor=0"), "trainer.backbone_lr_factor=0 is invalid", "=0.1"
    ),
    "init_from a missing run": Case(("train", "init_from={tmp}/no-run"), "no-run does not exist", "pass a run folder"),
    "unknown torchvision model": Case(
        ("train", *SMOKE, "model=torchvision", "model.name=resnet7", "model.weights=none"),
        "model.name='resnet7' is not a torchvision classification model",
        "resnet18",
    ),
    "imagenet statistics for grey images": Case(
        ("train", *SMOKE, "dataset.source.channels=1", "dataset.normalization=imagenet"),
        "dataset.normalization=imagenet needs RGB images",
        "dataset.normalization=data",
    ),
    "tiny input size": Case(("train", "dataset.input_size=3"), "dataset.input_size=3 is invalid", "224"),
    # sweeps
    "interval under the grid sweeper": Case(
        ("-m", "lr=tag(log,interval(0.01,0.1))"), "the grid sweeper (the default) runs listed values", "sweeper=tpe"
    ),
    "search setting under the grid sweeper": Case(
        ("-m", "lr=0.1,0.2", "hydra.sweeper.n_trials=5"), "is a setting of the search sweepers", "sweeper=random"
    ),
    "objective no run records": Case(
        ("-m", "sweeper=random", "lr=tag(log,interval(0.01,0.1))", "hydra.sweeper.objectives=[val_accuracy]"),
        "'val_accuracy' is not a number runs record",
        "choose from best_val_acc",
    ),
    "pruner that cannot be built": Case(
        ("-m", "sweeper=tpe", "pruner=median", "pruner.n_startup_trials=-1", "lr=tag(log,interval(0.01,0.1))"),
        "the pruner cannot be built",
        "pruner.* overrides",
    ),
    "no parallel trials": Case(
        ("-m", "sweeper=random", "launcher=joblib", "hydra.launcher.n_jobs=0", "lr=tag(log,interval(0.01,0.1))"),
        "hydra.launcher.n_jobs=0 is invalid",
        "hydra.launcher.n_jobs=2",
    ),
    "report of a non-sweep folder": Case(("report", "{run}"), "is not a sweep folder", "outputs/sweeps/"),
    "from_sweep of a missing folder": Case(
        ("train", "from_sweep={tmp}/no-sweep"), "no-sweep is not a sweep folder", "outputs/sweeps/"
    ),
    "sweep database that cannot open": Case(
        ("-m", "sweeper=random", "lr=tag(log,interval(1e-3,1))", "hydra.sweeper.storage=sqlite:///{tmp}/no-dir/s.db"),
        "hydra.sweeper.storage='sqlite:///{tmp}/no-dir/s.db' cannot be opened",
        "sqlite:///study.db in a folder that exists",
    ),
    "sweep database of no known kind": Case(
        ("-m", "sweeper=random", "lr=tag(log,interval(1e-3,1))", "hydra.sweeper.storage=foo://bar"),
        "cannot be opened (Can't load plugin: sqlalchemy.dialects:foo)",
        "a path ending in .journal",
    ),
    "sweep database in memory": Case(
        ("-m", "sweeper=random", "lr=tag(log,interval(1e-3,1))", "hydra.sweeper.storage=sqlite://"),
        "is an in-memory database, which the trials' processes cannot share",
        "sqlite:///study.db",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files the cases point at, made once per test process: one real run, then damaged copies of it."""
    tmp = tmp_path_factory.mktemp("bad-input")
    made = {"tmp": tmp, "run": tmp / "run", "a_file": tmp / "a-file"}
    made["a_file"].write_text("not a folder")
    code, _ = call_cli(["train", *SMOKE, "lr=0.1", f"hydra.run.dir={made['run']}"], tmp)
    assert code == 0, "the run the cases start from failed: see the captured output"
    checkpoint = made["run"] / "checkpoints" / "last.pt"

    def copy_run(name: str) -> Path:
        target = tmp / name
        shutil.copytree(made["run"], target, ignore=shutil.ignore_patterns(".run.lock"))
        return target

    made["run_without_checkpoint"] = copy_run("no-checkpoint")
    shutil.rmtree(made["run_without_checkpoint"] / "checkpoints")
    made["corrupt_run"] = copy_run("corrupt")
    (made["corrupt_run"] / "checkpoints" / "last.pt").write_bytes(b"\x00garbage" * 100)
    made["truncated_checkpoint"] = tmp / "truncated.pt"
    made["truncated_checkpoint"].write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])

    payload = torch.load(checkpoint, weights_only=True)
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        simple_cfg = compose(config_name="train", overrides=[*SMOKE, "model=simple_cnn"]).model
    simple = instantiate(simple_cfg, in_channels=3, num_classes=10, image_size=[32, 32]).state_dict()
    made["run_with_foreign_checkpoint"] = copy_run("foreign")  # its last.pt: a simple_cnn run's
    foreign_config = {**payload["config"], "model": OmegaConf.to_container(simple_cfg, resolve=True)}
    torch.save(
        {**payload, "model": simple, "config": foreign_config},
        made["run_with_foreign_checkpoint"] / "checkpoints" / "last.pt",
    )
    made["mismatched_weights"] = tmp / "mismatched.pt"
    torch.save({**payload, "model": simple}, made["mismatched_weights"])
    made["foreign_target_checkpoint"] = tmp / "foreign-target.pt"
    touch = {"_target_": "os.system", "command": f"touch {tmp / 'PWNED'}"}  # would run while the model is built
    nested = {**payload["config"], "model": {**payload["config"]["model"], "widths": touch}}
    torch.save({**payload, "config": nested}, made["foreign_target_checkpoint"])
    made["interpolating_checkpoint"] = tmp / "interpolating.pt"
    spliced = {**payload["config"], "payload": touch, "model": {**payload["config"]["model"], "widths": "${payload}"}}
    torch.save({**payload, "config": spliced}, made["interpolating_checkpoint"])
    made["run_naming_code"] = copy_run("naming-code")
    overrides = made["run_naming_code"] / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- model._target_=builtins.exec\n")
    made["malicious_checkpoint"] = tmp / "malicious.pt"
    torch.save({**payload, "model": CodePayload(tmp / "PWNED")}, made["malicious_checkpoint"])
    made["malicious_pickle"] = tmp / "malicious.pkl"
    made["malicious_pickle"].write_bytes(pickle.dumps(CodePayload(tmp / "PWNED")))

    made["images"] = tmp / "images"
    made["images_with_empty_class"] = tmp / "images-empty-class"
    for folder in (made["images"], made["images_with_empty_class"]):
        for name in ("cat", "dog"):
            (folder / name).mkdir(parents=True)
            for i in range(3):
                (folder / name / f"{i}.png").write_bytes(tiny_png(i))
    for image in (made["images_with_empty_class"] / "dog").iterdir():
        image.unlink()
    made["one_class_images"] = tmp / "one-class"
    made["images_with_unknown_test_class"] = tmp / "unknown-test-class"
    folders = [made["one_class_images"] / "cat"]
    folders += [
        made["images_with_unknown_test_class"] / split / name for split in ("train", "test") for name in ("cat", "dog")
    ]
    folders.append(made["images_with_unknown_test_class"] / "test" / "bird")
    for folder in folders:
        folder.mkdir(parents=True)
        for i in range(4):
            (folder / f"{i}.png").write_bytes(tiny_png(i))
    return made


class CodePayload:
    """A pickle that runs `touch <marker>` when loaded by a plain unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.system, (f"touch {self.marker}",)


def tiny_png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def fill(text: str, files: dict[str, Path]) -> str:
    return text.format(**{k: str(v) for k, v in files.items()})


def test_the_catalogue_covers_at_least_30_mistakes() -> None:
    assert len(CASES) >= 30


# Run by the installed command: a mistake caught before Hydra starts (cnnlab.cli), one in Hydra's composition and
# config check, and one inside a task's job (Hydra's logging set up, the error carried out as UserErrorExit)
REAL_PROCESS = {"unknown task", "unknown key", "checkpoint with a code payload"}


def test_the_real_process_cases_are_in_the_catalogue() -> None:
    assert REAL_PROCESS <= set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_mistake_fails_in_one_line_naming_problem_and_fix(files: dict[str, Path], name: str, cli_in_process) -> None:
    case = CASES[name]
    if name == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = [fill(a, files) for a in case.args]
    result = (run if name in REAL_PROCESS else cli_in_process)(args, files["tmp"])
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnlab: error: "), result.stderr
    assert fill(case.problem, files) in lines[0], lines[0]
    assert fill(case.fix, files) in lines[0], lines[0]
    assert not (files["tmp"] / "PWNED").exists()  # no checkpoint got to run its code


def worker_state() -> dict[str, object]:
    """What a command run in this process changes and must put back for the tests after it."""
    import logging
    import os
    import signal
    import sys

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    return {
        "cwd": os.getcwd(),
        "environment": dict(os.environ),
        "argv": list(sys.argv),
        "root logger": (logging.root.level, list(logging.root.handlers)),
        "cnnlab logger": (logging.getLogger("cnnlab").level, list(logging.getLogger("cnnlab").handlers)),
        "hydra": (GlobalHydra.instance().is_initialized(), HydraConfig.initialized()),
        "signals": (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)),
        "threads": torch.get_num_threads(),
    }


def test_a_case_run_in_process_leaves_the_worker_as_it_found_it(files: dict[str, Path], cli_in_process) -> None:
    """The in-process cases share a worker with each other and with other test files: the command's environment,
    folder, argv, Hydra's logging and global state must not outlive it."""
    before = worker_state()
    run_dir = files["tmp"] / "leak-check"
    result = cli_in_process(["train", *SMOKE, "optimizer.momentum=-1", f"hydra.run.dir={run_dir}"], files["tmp"])
    assert result.returncode == 2, result.stderr
    # it got into Hydra's job, which logs through its own handlers: the error is in the run's train.log
    assert "Invalid momentum value" in (run_dir / "train.log").read_text()
    assert worker_state() == before


@pytest.mark.parametrize("how", [["--debug"], []], ids=["--debug", "HYDRA_FULL_ERROR=1"])
def test_the_traceback_is_still_there_when_asked_for(files: dict[str, Path], how: list[str]) -> None:
    result = run(["train", "lr=abc", *how], files["tmp"], env={} if how else {"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "lr='abc' is invalid" in result.stderr


def test_a_config_mistake_fails_before_any_data_loads_and_leaves_no_folder(
    files: dict[str, Path], cli_in_process
) -> None:
    """The validation runs first: a missing image folder would be the next error if data were read."""
    cwd = files["tmp"] / "clean"
    cwd.mkdir()
    result = cli_in_process(["train", "dataset=imagefolder", f"dataset.root={files['images']}", "lr=0"], cwd)
    assert result.returncode == 2 and "lr=0 is invalid" in result.stderr
    assert list(cwd.iterdir()) == []


def test_eval_takes_data_locations_from_this_machine_not_the_checkpoint(
    files: dict[str, Path], compose_train, cli_in_process
) -> None:
    """A shared checkpoint cannot choose where eval downloads and unpacks data (dataset.root, url, md5)."""
    from test_data_sources import make_cifar_archive, write_cifar

    tmp = files["tmp"] / "locations"
    archive, md5, _ = make_cifar_archive(tmp)  # what a tampered checkpoint would have eval fetch
    dataset = OmegaConf.to_container(compose_train(["dataset=cifar10"]).dataset, resolve=True)
    dataset.update(root=str(tmp / "chosen-by-the-file"), val_size=5)
    dataset["source"].update(root=str(tmp / "chosen-by-the-file"), url=archive.as_uri(), md5=md5)
    payload = torch.load(files["run"] / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**payload, "config": {**payload["config"], "dataset": dataset}}, tmp / "shared.pt")
    write_cifar(tmp / "local-data")
    result = cli_in_process(["eval", f"ckpt={tmp / 'shared.pt'}"], tmp, env={"CNNLAB_DATA": str(tmp / "local-data")})
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp / "eval.json").read_text())["count"] == 4  # the local copy's test split
    assert not (tmp / "chosen-by-the-file").exists()


def test_an_image_folder_run_skips_a_broken_file_and_reads_shell_syntax_as_a_path(
    files: dict[str, Path], cli_in_process
) -> None:
    """A file that does not decode is left out with a warning naming it; a folder named like a shell
    command is only ever a folder: nothing runs it."""
    images = files["tmp"] / "shell" / "imgs; touch PWNED-1 $(touch PWNED-2) `touch PWNED-3`"
    shutil.copytree(files["images"], images)
    (images / "cat" / "broken.png").write_bytes(b"<html>not a png</html>")
    cwd = images.parent
    result = cli_in_process(
        [
            "train",
            *SMOKE,
            "dataset=imagefolder",
            f"dataset.root='{images}'",
            "dataset.val_size=2",
            f"hydra.run.dir='{cwd / 'run; touch PWNED-4'}'",
        ],
        cwd,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "warning: imagefolder: skipping" in output and "broken.png (not a readable image" in output
    assert json.loads((cwd / "run; touch PWNED-4" / "metrics.json").read_text())["status"] == "completed"
    assert not [p for p in files["tmp"].rglob("PWNED*")]


def test_eval_data_settings_keep_only_the_checkpoints_split_and_augmentation(compose_train, monkeypatch) -> None:
    """Locations and loaders come from this machine (None included); the recorded split settings stay."""
    from cnnlab.inference.local_data import with_local_data_settings

    monkeypatch.setenv("CNNLAB_DATA", "/local/data")
    recorded = compose_train(["dataset=cifar10", "dataset.val_size=123", "dataset.augment.flip=false"]).dataset
    recorded = OmegaConf.create(OmegaConf.to_container(recorded, resolve=True))
    recorded.root = recorded.source.root = "/chosen/by/the/file"
    recorded.source.url, recorded.source.md5, recorded.source._target_ = "https://evil/x.tgz", "0" * 32, "os.system"
    local = with_local_data_settings(recorded)
    assert (local.root, local.source.root, local.source.url, local.source.md5) == (
        "/local/data",
        "/local/data",
        None,
        None,
    )
    assert local.source._target_ == "cnnlab.data.cifar.load_cifar10"
    assert local.val_size == 123 and local.augment.flip is False
    synthetic = OmegaConf.create(
        {
            **OmegaConf.to_container(compose_train(["dataset=synthetic"]).dataset, resolve=True),
            "root": "/chosen/by/the/file",
        }
    )
    synthetic.source.url = "https://evil/x.tgz"
    cleaned = with_local_data_settings(synthetic)
    assert cleaned.root is None and "url" not in cleaned.source
