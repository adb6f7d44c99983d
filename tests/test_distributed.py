"""Data-parallel training on 2 CPU processes (gloo): `trainer.devices=2` and torchrun give one run folder and the
single-process result; the shards cover the training split once per epoch; Ctrl-C, SIGKILL of the whole job and
the death of one rank all end cleanly and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab.data.build import Shard, build_data

from conftest import cnnlab_executable, run_dirs

RUN = [
    "train",
    "experiment=smoke",
    "device=cpu",
    "epochs=3",
    "dataset.train_size=1400",
    "dataset.test_size=200",
    "dataset.val_size=200",
    "batch_size=32",
    "trainer.log_every=5",
]
PARALLEL = [*RUN, "trainer.devices=2"]
# one thread per process: CPU float reductions repeat exactly only for a fixed thread count
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)
STOP_WITHIN_S = 30  # a rank that dies stops the others within this long (the launcher notices in well under 1 s)


def start(args: list[str], cwd: Path, command: list[str] | None = None) -> subprocess.Popen:
    """The real command in its own process group, as a terminal runs it (Ctrl-C reaches every process)."""
    return subprocess.Popen(
        [*(command or [cnnlab_executable()]), *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def metrics(run: Path) -> dict:
    try:
        return json.loads((run / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for_epochs(run: Path, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while metrics(run).get("epochs_completed", 0) < count:
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def comparable(values: dict) -> dict:
    """metrics.json without wall-clock figures."""
    history = [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in values["history"]]
    keep = ("status", "best_val_acc", "test_acc", "test_loss", "epochs_completed", "processes")
    return {**{k: values.get(k) for k in keep}, "history": history}


def children(pid: int) -> list[int]:
    """The processes `pid` started (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def rank_processes(pid: int) -> list[int]:
    """The training processes torch's launcher spawned under the `cnnlab` process `pid`."""
    ranks = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_text()
        except OSError:
            continue
        if "spawn_main" in command:
            ranks.append(child)
    return sorted(ranks)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 2-process run, to compare the others with."""
    folder = tmp_path_factory.mktemp("reference")
    code, out, err = finish(start([*PARALLEL, f"hydra.run.dir={folder / 'run'}"], folder))
    assert code == 0, err
    assert run_dirs(folder) == [folder / "run"]  # no rank made a folder of its own
    return metrics(folder / "run")


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tests find processes in /proc")


def test_two_processes_give_one_run_folder_and_the_one_process_result(
    reference: dict, cnnlab_in_process, tmp_path: Path
) -> None:
    assert reference["status"] == "completed" and reference["processes"] == 2
    assert reference["train_size"] == 1200 and reference["val_size"] == 200  # the whole splits, not one shard
    one_process = cnnlab_in_process(*RUN)  # the one-process run needs no process of its own
    assert one_process.returncode == 0, one_process.stderr
    (single,) = run_dirs(tmp_path / "outputs")
    alone = metrics(single)
    # Same global batch and seed; the shards augment with their own random streams, so the numbers differ a little
    assert abs(alone["best_val_acc"] - reference["best_val_acc"]) <= 0.03
    assert abs(alone["history"][-1]["train/loss"] - reference["history"][-1]["train/loss"]) <= 0.1


@pytest.mark.slow  # 25 s: the two-process run again, started by torchrun
def test_torchrun_runs_the_same_run(reference: dict, tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cnnlab"]
    code, _, err = finish(start(RUN, tmp_path, torchrun))
    assert code == 0, err
    (folder,) = run_dirs(tmp_path / "outputs")  # one folder for the two processes
    assert comparable(metrics(folder)) == comparable(reference)
    assert "[rank 1]" not in (folder / "train.log").read_text()  # rank 1 logs warnings and errors only


def test_the_shards_cover_the_training_split_once_per_epoch(compose_train) -> None:
    cfg = compose_train(["experiment=smoke", "dataset.train_size=1003", "dataset.val_size=101"])
    whole = build_data(cfg.dataset, 60, 50, torch.device("cpu"), 0, False)
    split = {bytes(image.numpy()) for image in whole.train.data.gather(torch.arange(len(whole.train.data)))}
    shards = [build_data(cfg.dataset, 60, 50, torch.device("cpu"), 0, False, Shard(rank, 3)) for rank in range(3)]
    steps = len(shards[0].train)
    assert {len(shard.train) for shard in shards} == {steps} and steps > 0  # every rank takes as many steps
    assert sum(len(shard.val.data) for shard in shards) == len(whole.val.data)
    held = [bytes(image.numpy()) for shard in shards for image in shard.train.data.gather(torch.arange(300))]
    assert {len(shard.train.data) for shard in shards} == {300}  # 902 training images: 3 x 300, 2 left out
    assert len(held) == len(set(held)) and set(held) <= split and len(split) - len(held) < 3
    for epoch in (0, 1):
        seen = []
        for shard in shards:
            shard.train.set_epoch(epoch)
            order = shard.train.iterate().order[: len(shard.train) * shard.train.batch_size]
            seen += [bytes(image.numpy()) for image in shard.train.data.gather(order)]
        assert len(seen) == len(set(seen)) == steps * 60  # each image at most once, a global epoch's worth


def checkpointed_epoch(run: Path) -> int:
    try:
        return torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"]
    except (OSError, RuntimeError, EOFError):  # not there yet, or being replaced
        return 0


@pytest.mark.slow  # 75 s: two interrupted two-process runs and their resumes (tests/test_resume.py covers one process)
def test_ctrl_c_then_sigkill_of_the_whole_job_each_resume_exactly(reference: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    job = start([*PARALLEL, f"hydra.run.dir={run}"], tmp_path)
    wait_for_epochs(run, 1)
    time.sleep(0.3)
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code, out, err = finish(job, timeout=60)
    assert code == 130
    assert f"cnnlab train resume={run}" in err and "Traceback" not in err + out
    assert metrics(run)["status"] == "interrupted"
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert checkpoint["position"]["step"] > 0 and len(checkpoint["rank_states"]) == 2  # mid-epoch, every rank

    job = start(["train", f"resume={run}"], tmp_path)
    while checkpointed_epoch(run) < 2:
        assert job.poll() is None, finish(job)[2]
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # every process of the job, without a word
    job.wait()
    code, out, err = finish(start(["train", f"resume={run}"], tmp_path))
    assert code == 0, err
    assert "resuming" in out + err
    assert comparable(metrics(run)) == comparable(reference)  # as if never stopped


@pytest.mark.slow  # 20 s: a two-process run whose rank 1 is killed
def test_a_rank_that_dies_stops_the_others_with_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    job = start([*PARALLEL, "epochs=20", f"hydra.run.dir={run}"], tmp_path)
    wait_for_epochs(run, 1)
    victim = rank_processes(job.pid)[-1]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    code, out, err = finish(job, timeout=STOP_WITHIN_S + 10)
    assert time.monotonic() - killed_at < STOP_WITHIN_S
    assert code != 0 and not rank_processes(job.pid)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "was killed by SIGKILL" in lines[0] and f"resume={run}" in lines[0]


@pytest.mark.parametrize("args", [["eval", "ckpt=x"], ["-m", "lr=0.1,0.2"]], ids=["eval", "sweep"])
def test_under_torchrun_only_a_training_run_starts(args: list[str], tmp_path: Path) -> None:
    placement = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    result = subprocess.run(
        [cnnlab_executable(), *args], cwd=tmp_path, env={**ENV, **placement}, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("cnnlab: error: under torchrun cnnlab runs one training run")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow  # 40 s: a two-process run with a time budget
def test_every_rank_follows_rank_0s_time_budget_plan(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, _, err = finish(
        start([*PARALLEL, "epochs=1000", "trainer.time_budget=12s", f"hydra.run.dir={run}"], tmp_path)
    )
    assert code == 0, err  # ranks whose plans differed would wait for each other's collectives and time out
    done = metrics(run)
    assert done["status"] == "completed" and done["time_budget_s"] == 12
    assert done["history"][-1]["lr"] < 0.01 * max(h["lr"] for h in done["history"])  # annealed at the budget's end
