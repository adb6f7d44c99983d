"""Shared helpers: compose cnnlab's configs with Hydra's compose API and run the installed `cnnlab` command."""

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

import cnnlab.config.resolvers  # noqa: F401 - the configs use cnnlab's resolvers
from cnnlab.cli import expose_sweeper_plugin
from cnnlab.placement import available_cores

if TYPE_CHECKING:
    from cnnlab.sweeps.sweeper import OptunaSweep

# Before any compose scans Hydra's plugins, as `cnnlab` does: a scan made without it would lack cnnlab's sweeper, and
# scanning again re-executes plugin modules (objects made before would no longer pickle)
expose_sweeper_plugin()

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


@pytest.fixture
def cnnlab_in_process(cli_in_process, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cnnlab's twin without a new interpreter: cnnlab_in_process(*args, cwd=tmp_path, env=None).

    For the runs and sweeps whose test is about what they write, not about the installed command: each saves the
    5-8 s of importing torch again. Tests that kill, shadow an import or launch processes keep run_cnnlab.
    """

    def run(*args: str, cwd: Path = tmp_path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
        return cli_in_process(list(args), cwd, env, data_under=tmp_path)

    return run


def run_dirs(root: Path) -> list[Path]:
    """Every run folder (the ones holding a .hydra snapshot) under `root`, sorted."""
    return sorted(p.parent for p in root.rglob(".hydra"))


# The warning filters a fresh interpreter starts with (no -W, no PYTHONWARNINGS): what a `cnnlab` process would print
FRESH_INTERPRETER_WARNINGS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


@contextmanager
def logging_restored() -> Iterator[None]:
    """Undo Hydra's logging setup afterwards: it replaces the root logger's handlers (pytest's among them) with the
    run's console and train.log handlers, which would otherwise stay open and log every later test in the worker."""
    manager = logging.root.manager
    loggers = [logging.root, *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    saved = {lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers}
    kept = {h for _, handlers, _, _ in saved.values() for h in handlers}
    disabled = manager.disable
    try:
        yield
    finally:
        now = [logging.root, *(lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger))]
        for logger in now:
            for handler in logger.handlers:
                if handler not in kept:
                    handler.close()
            level, handlers, propagate, off = saved.get(logger, (logging.NOTSET, [], True, False))
            logger.handlers = handlers
            logger.propagate, logger.disabled = propagate, off
            logger.setLevel(level)
        logging.disable(disabled)


@contextmanager
def process_state_restored(cwd: Path, env: dict[str, str], argv: list[str]) -> Iterator[None]:
    """Run in `cwd` with `env` and `argv`, then put back all the process-wide state a cnnlab command changes.

    That is the working folder, environment (cnnlab sets HYDRA_FULL_ERROR, a deterministic run
    CUBLAS_WORKSPACE_CONFIG), sys.argv, Hydra's global state, logging, signal handlers, torch's thread
    count and determinism flags, and the global random generators a run seeds; so the next test in the worker sees
    none of it. (torch.set_flush_denormal, which a CPU run turns on, has no getter; in-process training does the same.)
    """
    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    old_cwd, old_env, old_argv = os.getcwd(), dict(os.environ), sys.argv
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    hydra_backup, hydra_config = get_gh_backup(), HydraConfig.instance().cfg
    GlobalHydra.instance().clear()  # a fresh process has no Hydra initialised (compose_train's would refuse a run)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv
    try:
        with logging_restored():
            yield
    finally:
        GlobalHydra.instance().clear()
        if hydra_backup is not None:
            restore_gh_from_backup(hydra_backup)
        HydraConfig.instance().cfg = hydra_config
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
        sys.argv = old_argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


def call_cli(args: list[str], cwd: Path, env: dict | None = None, data_under: Path | None = None) -> tuple[int, str]:
    """`cnnlab *args` in this interpreter: (exit code, the warnings a fresh `cnnlab` process would have printed).

    The same entry point as the console script (cnnlab.cli:main) in the same environment as run_cli, without the
    5-8 s a new interpreter spends importing torch. Output goes to this process's stdout and stderr; an exception
    that would end the process is printed there as its traceback, with exit code 1.
    """
    from cnnlab.cli import main

    code: Any = 0
    with (
        process_state_restored(cwd, {**cli_env(data_under or cwd), **(env or {})}, ["cnnlab", *args]),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.resetwarnings()
        for action, category, module in reversed(FRESH_INTERPRETER_WARNINGS):
            warnings.filterwarnings(action, category=category, module=module)
        try:
            main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        except Exception:  # what the interpreter would print on its way out
            traceback.print_exc()
            code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, and the status is 1
        print(code, file=sys.stderr)
        code = 1
    warned = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return code, warned


@pytest.fixture
def cli_in_process(capfd: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """cli_in_process(args, cwd, env=None, data_under=None): run_cli's result, from `cnnlab` run in this process.

    For commands whose cost would mostly be the interpreter's start-up (mistakes that fail in their config check,
    short eval and predict runs); run_cli stays the test of the installed command itself.
    """

    def run(
        args: list[str], cwd: Path, env: dict | None = None, data_under: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        capfd.readouterr()  # what the test printed before is not the command's
        code, warned = call_cli(args, cwd, env, data_under)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(["cnnlab", *args], code, out, warned + err)

    return run
