"""cnnlab's launchers: GPU slots and scheduling with fake trials, a SLURM retry with a fake job, and
launcher=parallel through the real `cnnlab -m` on the CPU."""

import json
import pickle
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cnnlab.errors import UserError
from cnnlab.placement import available_cores
from cnnlab.sweeps.launch import SlotPool, TrialLauncher
from cnnlab.sweeps.parallel import child_env, plan_slots, visible_gpus

from conftest import TRIAL, cli_env, cnnlab_executable, random_search


class Clock:
    """Fake time: the pool's sleep advances it, so trials of different lengths end in a known order."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeTrial:
    """A trial that ends `duration` fake seconds after it started, having seen only its slot's GPU."""

    def __init__(self, clock: Clock, num: int, duration: float, gpu: str | None) -> None:
        self.clock, self.num, self.duration = clock, num, duration
        self.started = clock.now
        self.cuda_visible_devices = child_env(gpu).get("CUDA_VISIBLE_DEVICES")

    def poll(self) -> JobReturn | None:
        if self.clock.now < self.started + self.duration:
            return None
        return JobReturn(overrides=[], status=JobStatus.COMPLETED, _return_value=self.num)

    def interrupt(self) -> None:
        self.duration = 0.0


def fake_pool(slots: Sequence[str | None], durations: dict[int, float]) -> tuple[SlotPool, dict[int, FakeTrial]]:
    clock, started = Clock(), {}

    def start(num: int, overrides: Sequence[str], gpu: str | None) -> FakeTrial:
        started[num] = FakeTrial(clock, num, durations[num], gpu)
        return started[num]

    return SlotPool(slots, start, sleep=clock.sleep), started


def test_two_gpus_two_trials_each_and_the_next_trial_starts_when_any_one_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = plan_slots(n_jobs=8, gpus=visible_gpus(), trials_per_gpu=2, cores=16)
    assert slots == ["0", "1", "0", "1"]  # round-robin; n_jobs=8 is capped at 2 GPUs x 2

    durations = {0: 10, 1: 3, 2: 6, 3: 8, 4: 5, 5: 1}  # trial number -> seconds
    pool, started = fake_pool(slots, durations)
    for num in durations:
        pool.submit(num, [f"lr={num}"])
    ended = []
    while finished := pool.wait_any():
        ended.extend(num for num, _ in finished)
        running = [t for n, t in started.items() if n not in ended]
        per_gpu = [t.cuda_visible_devices for t in running]
        assert all(per_gpu.count(gpu) <= 2 for gpu in ("0", "1"))  # never more than trials_per_gpu on a GPU

    gpu_and_start = {n: (t.cuda_visible_devices, t.started) for n, t in started.items()}
    assert gpu_and_start == {
        0: ("0", 0),
        1: ("1", 0),
        2: ("0", 0),
        3: ("1", 0),
        4: ("1", 3),  # trial 1 ended at 3 s: trial 4 took its share of GPU 1 at once, not when the batch ended (10 s)
        5: ("0", 6),  # trial 2 ended at 6 s, on GPU 0
    }
    assert ended == [1, 2, 5, 3, 4, 0]


def test_gpus_are_named_as_this_process_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]  # a child sees the sweep's GPU 1 only as CUDA_VISIBLE_DEVICES=5
    assert plan_slots(n_jobs=-1, gpus=["3", "5"], trials_per_gpu=1, cores=16) == ["3", "5"]
    assert plan_slots(n_jobs=3, gpus=[], trials_per_gpu=2, cores=16) == [None, None, None]  # CPU: n_jobs processes
    assert plan_slots(n_jobs=-1, gpus=[], trials_per_gpu=1, cores=4) == [None] * 4
    assert child_env("5")["CUDA_VISIBLE_DEVICES"] == "5"
    # data-parallel trials (trainer.devices=2) take GPUs two by two
    assert plan_slots(n_jobs=-1, gpus=["0", "1", "2", "3"], trials_per_gpu=1, cores=16, gpus_per_trial=2) == [
        "0,1",
        "2,3",
    ]
    with pytest.raises(UserError, match="gpus_per_trial=4 .* shows 2 GPUs"):
        plan_slots(n_jobs=2, gpus=["3", "5"], trials_per_gpu=1, cores=16, gpus_per_trial=4)


class FakeLauncher(TrialLauncher):
    def __init__(self, pool: SlotPool) -> None:
        self.pool = pool

    def setup(self, **kwargs: object) -> None:
        """Set up by the test."""


def test_the_search_asks_a_new_trial_as_soon_as_one_ends(tmp_path: Path) -> None:
    """n_jobs=2 with a launcher that reports each trial as it ends: trial 2 is asked when trial 0 ends and
    trial 1 is still running, and every trial is told to the study."""
    import optuna

    from cnnlab.sweeps.space import parse_search_space
    from cnnlab.sweeps.study import storage_for

    sweep = random_search(n_trials=4, n_jobs=2)
    sweep.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    durations = {0: 2, 1: 7, 2: 2, 3: 1}
    pool, started = fake_pool([None, None], durations)
    for num in durations:  # each trial leaves the metrics.json a run writes
        (tmp_path / str(num)).mkdir()
        (tmp_path / str(num) / "metrics.json").write_text(json.dumps({"status": "completed", "best_val_acc": num / 10}))
    sweep.launcher = FakeLauncher(pool)
    study = optuna.create_study(storage=storage_for(None, tmp_path), study_name="cnnlab", direction="maximize")

    sweep._run(study, parse_search_space(["lr=tag(log,interval(1e-3,1))"]), tmp_path)
    assert {n: t.started for n, t in started.items()} == {0: 0, 1: 0, 2: 2, 3: 4}
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.value for t in study.trials] == [0.0, 0.1, 0.2, 0.3]


class FakeSlurmJob:
    """A submitit job that has ended: its result file and its return."""

    def __init__(self, job_id: str, folder: Path, ret: JobReturn) -> None:
        self.job_id, self.ret = job_id, ret
        self.paths = SimpleNamespace(result_pickle=folder / f"{job_id}_result.pkl", stderr=folder / f"{job_id}.err")
        self.paths.result_pickle.write_bytes(pickle.dumps(ret))

    def results(self) -> list[JobReturn]:
        return [self.ret]


def test_a_trial_slurm_stops_is_submitted_again_and_resumes_in_its_folder(tmp_path: Path) -> None:
    """SLURM preempts trial 3: it saved last.pt and said "interrupted"; it is submitted again with resume= its own
    folder, and only the resumed run's result reaches the sweep."""
    from cnnlab.sweeps.slurm import SlurmQueue, SlurmRun

    run_dir = tmp_path / "3"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    (run_dir / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    submitted: list[list[str]] = []

    def submit_job(num: int, overrides: list[str]) -> FakeSlurmJob:
        submitted.append(overrides)
        status = JobStatus.FAILED if len(submitted) == 1 else JobStatus.COMPLETED
        return FakeSlurmJob(str(100 + len(submitted)), tmp_path, JobReturn(overrides=overrides, status=status))

    launcher = SimpleNamespace(queue=SlurmQueue(), sweep_dir=tmp_path, max_retries=3, submit_job=submit_job)
    run = SlurmRun(launcher, 3, ["lr=0.1"])
    assert run.poll() is None  # stopped by SLURM: submitted again instead of ending
    assert submitted == [["lr=0.1"], ["lr=0.1", f"resume='{run_dir}'"]]
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", "best_val_acc": 0.9}))
    ret = run.poll()
    assert ret is not None and ret.status == JobStatus.COMPLETED and len(submitted) == 2


def test_hydra_state_travels_to_another_process_without_omegaconfs_resolvers() -> None:
    """The private attribute set_hydra_state reads is still there (the end-to-end test below uses the rest)."""
    from omegaconf.basecontainer import BaseContainer

    from cnnlab.sweeps.optuna_internals import hydra_state

    assert pickle.loads(pickle.dumps(hydra_state()))  # pickle could not carry the resolvers, which are closures
    assert isinstance(BaseContainer._resolvers, dict) and "oc.env" in BaseContainer._resolvers


@pytest.mark.slow  # 45 s: a fresh Python per trial (test_search.py's joblib test runs trials in parallel too)
def test_parallel_launcher_runs_a_search_in_fresh_processes(run_cnnlab, tmp_path: Path) -> None:
    search = run_cnnlab(
        "-m",
        "sweeper=random",
        "launcher=parallel",
        "hydra.sweeper.n_jobs=2",
        "lr=tag(log,interval(1e-2,1))",
        *TRIAL,
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={tmp_path / 'search'}",
    )
    assert search.returncode == 0, search.stderr
    metrics = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "search").glob("*/metrics.json")}
    assert sorted(metrics) == ["0", "1", "2"] and all(m["status"] == "completed" for m in metrics.values())
    share = min(int(cli_env(tmp_path)["OMP_NUM_THREADS"]), max(1, available_cores() // 2))
    assert all(m["threads"] == share for m in metrics.values())  # 2 trials at once share the cores
    assert (tmp_path / "search" / "report.md").is_file()


@pytest.mark.slow  # 20 s: a fresh Python per trial
def test_parallel_launcher_runs_a_grid_sweep(run_cnnlab, tmp_path: Path) -> None:
    grid_dir = tmp_path / "grid"
    grid = run_cnnlab("-m", "launcher=parallel", "lr=0.01,0.1", *TRIAL, "epochs=1", f"hydra.sweep.dir={grid_dir}")
    assert grid.returncode == 0, grid.stderr
    assert sorted(p.parent.name for p in grid_dir.glob("*/metrics.json")) == ["0", "1"]
    assert (grid_dir / "report.md").is_file()


@pytest.mark.slow  # 70 s: a sweep stopped, then continued
def test_ctrl_c_stops_a_parallel_sweep_whose_trials_save_and_run_again(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        cnnlab_executable(),
        "-m",
        "sweeper=random",
        "launcher=parallel",
        "hydra.sweeper.n_jobs=2",
        "lr=tag(log,interval(1e-2,1))",
        *TRIAL,
        "dataset.train_size=3000",
        "epochs=4",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
    ]
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        process = subprocess.Popen(args, cwd=tmp_path, env=cli_env(tmp_path), stdout=out, stderr=err)
        train_log = sweep / "0" / "train.log"
        while not (train_log.is_file() and "epoch 1 " in train_log.read_text()):
            assert process.poll() is None, (tmp_path / "err.log").read_text()
            time.sleep(0.3)
        process.send_signal(signal.SIGINT)  # to the sweep alone: it passes it on to each trial once
        assert process.wait(timeout=120) == 130
    assert (tmp_path / "err.log").read_text().strip().splitlines()[-1] == (
        "cnnlab: error: the sweep was interrupted; run the same command again to continue it"
    )
    for trial in ("0", "1"):  # both stopped after a step, not at once, and saved where they were
        assert json.loads((sweep / trial / "metrics.json").read_text())["status"] == "interrupted"
        assert "step" in (sweep / trial / "train.log").read_text().splitlines()[-1]
        assert (sweep / trial / "checkpoints" / "last.pt").is_file()

    again = subprocess.run(args, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    statuses = [json.loads(p.read_text())["status"] for p in sweep.glob("*/metrics.json")]
    assert sorted(statuses) == ["completed"] * 3 + ["interrupted"] * 2
