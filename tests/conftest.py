"""Shared helpers: compose cnnlab's configs with Hydra's compose API and run the installed `cnnlab` command."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - the configs use cnnlab's resolvers
from cnnlab.placement import available_cores

if TYPE_CHECKING:
    from cnnlab.sweeps.sweeper import OptunaSweep

# A training run of a few seconds on synthetic data, for tests that need a real run folder
TINY = [
    "experiment=smoke",
    "device=cpu",
    "epochs=2",
    "dataset.train_size=600",
    "dataset.test_size=100",
    "dataset.val_size=100",
    "batch_size=64",
]

# A sweep trial of about a second: a small synthetic set that a good learning rate still learns to >0.9 in 2 epochs
TRIAL = [
    "experiment=smoke",
    "epochs=2",
    "dataset.train_size=1000",
    "dataset.val_size=200",
    "dataset.test_size=100",
    "batch_size=32",
    "trainer.histograms=false",
]


def random_search(n_trials: int, n_jobs: int) -> "OptunaSweep":
    """The cnnlab sweeper's work object over a random sampler, for tests that drive it without Hydra."""
    from omegaconf import OmegaConf

    from cnnlab.sweeps.sweeper import OptunaSweep

    return OptunaSweep(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}),
        objectives=["best_val_acc"],
        directions=["maximize"],
        n_trials=n_trials,
        n_jobs=n_jobs,
        seed=0,
        storage=None,
        study_name="cnnlab",
        report_metric="val/acc",
    )


@pytest.fixture
def compose_train() -> Iterator[Callable[..., DictConfig]]:
    """compose_train(overrides, hydra=False) -> the train config as `cnnlab train` composes it.

    hydra=True keeps the `hydra` node (launcher, sweeper, folders) in the result.
    """
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        yield lambda overrides=(), hydra=False: compose(
            config_name="train",
            overrides=list(overrides),
            return_hydra_config=hydra,
        )


def cnnlab_executable() -> str:
    """The installed console script next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).with_name("cnnlab")
    found = str(candidate) if candidate.exists() else shutil.which("cnnlab")
    if found is None:
        pytest.fail('the cnnlab command is not installed; run pip install -e ".[dev]"')
    return found


def threads_per_worker() -> int:
    """pytest-xdist runs several tests at once; each gets cores / workers threads, since OpenMP threads that
    outnumber the cores spin against each other and run up to 10x slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, available_cores() // workers)


@pytest.fixture(autouse=True, scope="session")
def share_cores_in_process() -> None:
    """Tests that train in-process share the cores like the CLI processes they run beside."""
    import torch

    torch.set_num_threads(threads_per_worker())


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment for a `cnnlab` subprocess: tests' data folder, and the cores shared fairly."""
    threads = str(threads_per_worker())
    env = {**os.environ, "CNNLAB_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(
    args: list[str], cwd: Path, env: dict | None = None, timeout: float = 240, data_under: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `cnnlab` with output captured and no terminal; its data folder is under `data_under` (default cwd)."""
    return subprocess.run(
        [cnnlab_executable(), *args],
        cwd=cwd,
        env={**cli_env(data_under or cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_cnnlab(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """run_cnnlab(*args, cwd=tmp_path, timeout=...) runs the real CLI with output captured and no terminal."""

    def run(
        *args: str, cwd: Path = tmp_path, timeout: float = 240, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        return run_cli(list(args), cwd, env, timeout, data_under=tmp_path)

    return run


def run_dirs(root: Path) -> list[Path]:
    """Every run folder (the ones holding a .hydra snapshot) under `root`, sorted."""
    return sorted(p.parent for p in root.rglob(".hydra"))
