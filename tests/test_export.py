"""`cnnlab export`: each format is written, described in model.json and checked; the file, loaded here on its own,
reproduces the PyTorch model at a batch size it was not exported or checked with.

The tiny runs are trained once per test session and shared by pytest-xdist's workers: a lock per run trains it
on first use and keeps one export at a time in its folder (model.json is read, then rewritten).
"""

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from cnnlab.config.validate import EXPORT_FORMATS, validate_export_config
from cnnlab.errors import UserError
from cnnlab.inference import export
from cnnlab.inference.trained import load_trained

from conftest import run_cli as cnnlab

TINY = [
    "experiment=smoke",
    "dataset.train_size=200",
    "dataset.val_size=50",
    "dataset.test_size=50",
    "epochs=1",
    "batch_size=50",
    "trainer.histograms=false",
]
MODELS = ("efficient_tiny", "simple_cnn")
HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None
FILE_BATCH = 3  # neither the export example's batch (2) nor one the command checks (1 and check_inputs)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], contextlib.AbstractContextManager[Path]]:
    """`with runs(model) as run:` a finished tiny run, held by this test until the block ends."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # the workers' common folder
    shared = shared / "export-runs"
    shared.mkdir(exist_ok=True)

    @contextlib.contextmanager
    def run_of(model: str) -> Iterator[Path]:
        folder = shared / model
        with FileLock(str(shared / f"{model}.lock")):
            if not (folder / "checkpoints" / "best.pt").is_file():
                result = cnnlab(["train", *TINY, f"model={model}", f"hydra.run.dir={folder}"], shared)
                assert result.returncode == 0, result.stderr
            yield folder

    return run_of


def run_file(fmt: str, path: Path, batch: torch.Tensor) -> torch.Tensor:
    """The exported file as a deployment would use it: no cnnlab, only its runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": batch.numpy()})[0])
    with torch.no_grad():
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
        return module(batch)


@pytest.mark.parametrize(
    ("model", "fmt"),
    [  # every format on one model in the default suite; the other model's exports with -m slow (a minute more)
        pytest.param(model, fmt, marks=() if model == MODELS[0] else pytest.mark.slow)
        for model in MODELS
        for fmt in EXPORT_FORMATS
    ],
)
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_writes_a_checked_file_that_reproduces_the_model(runs, model: str, fmt: str) -> None:
    if fmt == "onnx" and not HAS_ONNXRUNTIME:
        pytest.skip('onnxruntime is not installed: pip install -e ".[export]" (.[dev] includes it)')
    with runs(model) as run:
        result = cnnlab(["export", f"ckpt={run}", f"format={fmt}"], run.parent)
        assert result.returncode == 0, result.stderr
        card = json.loads((run / "export" / "model.json").read_text())
        trained = load_trained(run, torch.device("cpu"))
    assert "largest absolute difference" in result.stdout and "passed" in result.stdout, result.stdout
    assert (run / "export.log").is_file() and (run / "train.log").is_file()
    entry = card["formats"][fmt]
    assert (entry["format"], entry["file"]) == (fmt, export.FORMATS[fmt].file)
    assert card["input_shape"] == [3, 32, 32] and len(card["classes"]) == 10
    assert len(card["mean"]) == len(card["std"]) == 3
    assert card["input"]["description"] == "float32 NCHW, (pixel / 255 - mean) / std"
    assert card["checkpoint"] == str((run / "checkpoints" / "best.pt").resolve()) and card["epoch"] == 1
    check = entry["check"]
    assert check["passed"] and check["batch_sizes"] == [1, 8] and check["max_abs_diff"] <= check["atol"]
    assert f"{check['max_abs_diff']:.3g}" in result.stdout

    batch = export.random_inputs(trained, FILE_BATCH)
    with torch.no_grad():
        expected = trained.model(batch)
    got = run_file(fmt, run / "export" / entry["file"], batch)
    assert got.shape == (FILE_BATCH, 10)
    torch.testing.assert_close(got, expected, atol=check["atol"], rtol=check["rtol"])


def export_config(overrides: list[str]) -> DictConfig:
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        return compose(config_name="export", overrides=overrides)


def test_a_file_that_differs_is_kept_recorded_and_reported(runs, tmp_path: Path, monkeypatch) -> None:
    """A mismatch is a UserError naming the difference (one line from the CLI); the file stays for inspection,
    and model.json keeps the other formats exported from the same checkpoint."""
    with runs("simple_cnn") as run:
        shutil.copy(run / "checkpoints" / "best.pt", tmp_path / "best.pt")
    ckpt = f"ckpt={tmp_path / 'best.pt'}"
    export.export_checkpoint(export_config([ckpt, "format=exported"]), tmp_path)

    def load_off_by_one(path: Path) -> tuple[export.Runner, str]:
        run, runtime = export.run_torchscript(path)
        return (lambda batch: run(batch) + 1.0), runtime

    off_by_one = export.Format(export.FORMATS["torchscript"].file, export.torchscript_bytes, load_off_by_one)
    monkeypatch.setitem(export.FORMATS, "torchscript", off_by_one)
    with pytest.raises(UserError, match=r"differs from PyTorch by up to 1, over the tolerance"):
        export.export_checkpoint(export_config([ckpt, "format=torchscript"]), tmp_path)
    assert (tmp_path / "export" / "model.torchscript.pt").is_file()
    card = json.loads((tmp_path / "export" / "model.json").read_text())
    assert card["formats"]["torchscript"]["check"]["passed"] is False
    assert card["formats"]["exported"]["check"]["passed"] is True


def test_check_fails_on_a_difference_over_the_tolerance() -> None:
    inputs = torch.randn(4, 3)
    identity = torch.nn.Identity()
    within = export.check_file(identity, lambda batch: batch + 5e-5, "test", inputs, atol=1e-4, rtol=0)
    assert within.passed and within.batch_sizes == [1, 4] and within.max_abs_diff == pytest.approx(5e-5, rel=1e-2)
    over = export.check_file(identity, lambda batch: batch + 2e-4, "test", inputs, atol=1e-4, rtol=0)
    assert not over.passed
    nan = export.check_file(identity, lambda batch: batch * float("nan"), "test", inputs, atol=1, rtol=1)
    assert not nan.passed


def test_onnx_without_the_extra_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    with zipfile.ZipFile(tmp_path / "best.pt", "w"):  # passes for a checkpoint until it is loaded
        pass
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what find_spec reports for a missing package
    cfg = export_config([f"ckpt={tmp_path / 'best.pt'}", "format=onnx"])
    with pytest.raises(UserError, match=r'needs onnxscript, not installed here: pip install -e "\.\[export\]"'):
        validate_export_config(cfg)


def test_every_validated_format_can_be_written() -> None:
    assert set(EXPORT_FORMATS) == set(export.FORMATS)
