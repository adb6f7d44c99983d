"""Faults a run must survive: a full disk, two runs at once, a second writer, and SIGKILL at random points."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.checkpoints.store import CheckpointStore, load_checkpoint
from cnnlab.errors import UserError

from conftest import cli_env, cnnlab_executable, run_dirs

SMALL = ["experiment=smoke", "dataset.train_size=300", "dataset.val_size=100", "dataset.test_size=100"]
KILLS = Path(__file__).parent / "faults" / "random_kills.py"


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC at fsync (where a full disk often shows up) leaves last.pt as it was and no temporary file."""
    store = CheckpointStore(tmp_path, {"lr": 0.1})
    store.save({"model": {"w": torch.ones(3)}, "epoch": 1}, best=True)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("cnnlab.atomic.os.fsync", disk_full)
    with pytest.raises(
        UserError, match=r"could not write .*last.pt \(No space left on device\); the previous checkpoint is kept"
    ):
        store.save({"model": {"w": torch.zeros(3)}, "epoch": 2}, best=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def with_file_size_limit(limit: int, command: list[str]) -> list[str]:
    """`command` run so that writes past `limit` bytes fail with EFBIG, as on a full disk.

    An exec wrapper rather than preexec_fn (unsafe in a threaded parent); SIGXFSZ, which would kill
    the process instead, is ignored.
    """
    setup = (
        f"import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", setup, *command]


def test_full_disk_during_a_checkpoint_write_fails_clearly_and_loses_nothing(cnnlab_in_process, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = cnnlab_in_process("train", *SMALL, "model=simple_cnn", "epochs=1", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr
    env = cli_env(tmp_path)  # the full disk needs a process of its own: the file size limit applies to all of it
    checkpoint = run / "checkpoints" / "last.pt"
    before = checkpoint.read_bytes()
    assert len(before) > 300_000  # the limit below stops the checkpoint, not the smaller files
    full = subprocess.run(
        with_file_size_limit(300_000, [cnnlab_executable(), "train", f"resume={run}", "epochs=2"]),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert full.returncode == 2 and "Traceback" not in full.stdout + full.stderr
    assert full.stderr.strip() == (
        f"cnnlab: error: could not write {checkpoint} (File too large); the previous checkpoint "
        f"is kept: free some disk space, then continue with cnnlab train resume={run}"
    )
    assert checkpoint.read_bytes() == before and load_checkpoint(checkpoint)["epoch"] == 1
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["best.pt", "last.pt"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "could not write" in metrics["message"]


def test_two_runs_started_together_get_their_own_folders(tmp_path: Path) -> None:
    args = [cnnlab_executable(), "train", *SMALL, "epochs=1"]
    env = cli_env(tmp_path)
    procs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert [p.wait(timeout=240) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    runs = run_dirs(tmp_path / "outputs" / "runs")
    assert len(runs) == 2
    for run in runs:
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    # the folder names carry the start time to the second plus a random suffix
    assert all(len(run.name.split("_")) == 2 for run in runs)


def test_a_run_folder_has_one_writer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = cli_env(tmp_path)
    first = subprocess.Popen(
        [cnnlab_executable(), "train", *SMALL, "epochs=30", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.pt").exists():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        first.send_signal(signal.SIGSTOP)  # paused, not finished: it still holds the folder
        log = (run / "train.log").read_text()
        second = subprocess.run(
            [cnnlab_executable(), "train", f"resume={run}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        assert second.stderr.strip() == (
            f"cnnlab: error: another cnnlab process is writing {run}; let it finish "
            "(or stop it) before resuming this run"
        )
        assert (run / "train.log").read_text() == log and not (run / ".hydra" / "resumed").exists()
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_random_kills_of_a_run_lose_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(KILLS), "--kills", "6"], capture_output=True, text=True, timeout=900, env=cli_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kills, 6 resumes, 0 lost epochs, 0 unreadable checkpoints" in result.stdout
    assert re.search(r"\(([12]) kills during a checkpoint write\)", result.stdout), result.stdout
    assert "identical to an uninterrupted one: yes" in result.stdout


@pytest.mark.slow
def test_random_kills_of_a_sweep_lose_and_repeat_no_trial(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(KILLS), "--mode", "sweep", "--kills", "3", "--trials", "4"],
        capture_output=True,
        text=True,
        timeout=900,
        env=cli_env(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("3 kills, 3 resumes, 0 lost trials, 0 repeated trials; 4 of 4 trials completed")
