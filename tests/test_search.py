"""Searches through the real `cnnlab -m` command: samplers, pruning, failures, kill and resume, launchers, report.

Sweeps that stay in one process run the command's function in the test's own (conftest.cnnlab_in_process and
cli_in_process): a new interpreter would spend most of their time importing torch. The killed sweep and the launchers,
which need processes of their own, run the installed command.
"""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cnnlab.placement import available_cores

from conftest import TRIAL, cli_env, cnnlab_executable

LR = "lr=tag(log,interval(1e-3,1))"


def metrics_of(sweep: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def trials_csv(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "trials.csv") as f:
        return list(csv.DictReader(f))


def assert_report(sweep: Path, trials: int) -> list[dict[str, str]]:
    for name in ("report.md", "trials.csv", "objective_history.png", "multirun.yaml"):
        assert (sweep / name).is_file(), name
    rows = trials_csv(sweep)
    assert len(rows) == trials
    return rows


@pytest.mark.slow  # 12 s: a Gaussian-process search (the TPE tests cover the Bayesian path)
def test_gp_search_runs_a_study_and_writes_the_report(cnnlab_in_process, tmp_path: Path) -> None:
    # random search is run end to end by the failure and launcher tests, TPE by the pruning test
    sweep = tmp_path / "sweep"
    result = cnnlab_in_process(
        "-m",
        "sweeper=gp",
        LR,
        "weight_decay=tag(log,interval(1e-5,1e-2))",
        *TRIAL,
        "epochs=1",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(metrics_of(sweep)) == [0, 1, 2, 3]
    rows = assert_report(sweep, 4)
    assert {r["status"] for r in rows} == {"completed"}
    report = (sweep / "report.md").read_text()
    assert "GPSampler" in report and "## Best configuration" in report
    # the sampled values are what each trial trained with, and differ between trials
    lrs = {r["lr"] for r in rows}
    assert len(lrs) == 4
    for row in rows:
        config = OmegaConf.load(sweep / row["trial"] / ".hydra" / "config.yaml")
        assert config.lr == pytest.approx(float(row["lr"])) and 1e-3 <= config.lr <= 1


@pytest.mark.parametrize(
    "pruner",
    [  # the same path with another pruner: 30 s, so with -m slow
        pytest.param(["pruner=median", "pruner.n_startup_trials=2"], id="median"),
        pytest.param(["pruner=hyperband"], id="hyperband", marks=pytest.mark.slow),
    ],
)
def test_tpe_with_a_pruner_stops_bad_trials(cnnlab_in_process, tmp_path: Path, pruner: list[str]) -> None:
    sweep = tmp_path / "sweep"
    result = cnnlab_in_process(
        "-m",
        "sweeper=tpe",
        *pruner,
        "lr=tag(log,interval(1e-6,1))",
        *TRIAL,
        "hydra.sweeper.n_trials=5",  # 2 trials set the median, then 2 random ones and TPE's first one can be pruned
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(sweep)
    pruned = {n: m for n, m in metrics.items() if m["status"] == "pruned"}
    assert pruned, {n: (m["status"], m["best_val_acc"]) for n, m in metrics.items()}
    for m in pruned.values():
        assert m["pruned_at_epoch"] == m["epochs_completed"] == 1  # of 2: the last epoch is never pruned
        assert m.get("test_acc") is None  # a pruned trial skips the test split
    rows = trials_csv(sweep)
    assert [r["status"].split()[0] for r in rows[: len(metrics) - len(pruned)]] == ["completed"] * (
        len(metrics) - len(pruned)
    )
    assert any(r["status"].startswith("pruned @") for r in rows)


def test_nsga2_architecture_search_reports_a_pareto_front(cnnlab_in_process, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = cnnlab_in_process(
        "-m",
        "experiment=nas",
        "dataset=synthetic",
        "dataset.train_size=300",  # the front and the report need trials that differ, not accurate ones
        "dataset.val_size=100",
        "dataset.test_size=100",
        "epochs=1",
        "batch_size=32",
        "trainer.histograms=false",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    rows = assert_report(sweep, 4)
    assert (sweep / "pareto_front.png").is_file()
    assert "## Pareto front" in (sweep / "report.md").read_text()
    front = [r for r in rows if r["pareto"] == "*"]
    assert front
    # no trial on the front is beaten on both objectives by another completed trial
    for f in front:
        for other in rows:
            assert not (float(other["best_val_acc"]) > float(f["best_val_acc"]) and int(other["macs"]) < int(f["macs"]))
    # the architecture knobs were searched: trials differ in MACs and in their model settings
    assert len({r["macs"] for r in rows}) > 1
    assert {"model.widths.0", "model.depths.1", "model.se_ratio", "model.kernel_size"} <= set(rows[0])


def test_failed_and_diverged_trials_are_recorded_and_the_sweep_goes_on(cnnlab_in_process, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # model.widths.0=0 is rejected by the model (a user error inside the trial), lr=1e4 diverges;
    # seed 0 draws (1e4, 16), (1e4, 0), (0.05, 16), (1e4, 0): diverged, failed, completed, failed
    result = cnnlab_in_process(
        "-m",
        "sweeper=random",
        "lr=choice(0.05,10000.0)",
        "model.widths.0=choice(16,0)",
        *TRIAL,
        "epochs=1",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seed=0",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    statuses = {int(r["trial"]): r["status"] for r in trials_csv(sweep)}
    assert statuses == {0: "diverged", 1: "failed", 2: "completed", 3: "failed"}, statuses
    assert "RandomSampler" in (sweep / "report.md").read_text()
    assert "the sweep goes on" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_mistake_that_fails_every_trial_stops_the_sweep_in_one_line(cli_in_process, tmp_path: Path) -> None:
    result = cli_in_process(
        ["-m", "sweeper=random", "lr=choice(-1.0,-2.0)", *TRIAL, f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path
    )
    assert result.returncode == 2
    assert "lr=" in result.stderr and "must be a number > 0" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "space, words",
    [
        ("lr=tag(log,interval(0,1))", "log scale needs a lower bound > 0"),
        ("lr=interval(1,0.1)", "is empty"),
        ("lr=glob(*)", "cannot be searched"),
        ("lr=tag(log,interval(1e-3", "cannot parse override"),
        ("model.no_such_key=choice(1,2)", "no_such_key"),
    ],
)
def test_bad_search_spaces_fail_in_one_line(cli_in_process, tmp_path: Path, space: str, words: str) -> None:
    result = cli_in_process(["-m", "sweeper=tpe", space, *TRIAL, f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_killed_sweep_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        cnnlab_executable(),
        "-m",
        "sweeper=random",
        LR,
        *TRIAL,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
    ]
    env = cli_env(tmp_path)
    first = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill the sweep while its second trial trains
        if (sweep / "1" / "metrics.json").is_file():
            break
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished_before = {
        n: (sweep / str(n) / "metrics.json").stat().st_mtime_ns
        for n, m in metrics_of(sweep).items()
        if m["status"] == "completed"
    }
    assert list(finished_before) == [0]

    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr
    assert "continuing the sweep" in second.stderr + second.stdout
    metrics = metrics_of(sweep)
    assert sum(m["status"] == "completed" for m in metrics.values()) == 2
    for n, mtime in finished_before.items():  # finished trials were not run again
        assert (sweep / str(n) / "metrics.json").stat().st_mtime_ns == mtime
    rows = trials_csv(sweep)
    interrupted = [r for r in rows if r["status"] == "interrupted"]
    assert [r["trial"] for r in interrupted] == ["1"]
    for row in interrupted:  # an interrupted trial is retried with the same parameters under a new number
        retries = [r for r in rows if r["lr"] == row["lr"] and r["status"] == "completed"]
        assert retries and all(int(r["trial"]) > int(row["trial"]) for r in retries)

    # the same folder with another search space is refused instead of mixing two studies
    other = subprocess.run(
        [*args[:3], "lr=tag(log,interval(1e-2,1))", *args[4:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 2 and "other space" in other.stderr


def test_joblib_launcher_runs_two_trials_at_once_on_shared_cores(run_cnnlab, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cnnlab(
        "-m",
        "sweeper=random",
        "launcher=joblib",
        "hydra.sweeper.n_jobs=2",
        LR,
        *TRIAL,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    first, second = metrics_of(sweep).values()
    assert first["status"] == second["status"] == "completed"
    assert first["started_at"] < second["ended_at"] and second["started_at"] < first["ended_at"]  # they overlapped
    # each of the 2 workers gets half the cores (or fewer threads when OMP_NUM_THREADS says so)
    share = min(int(cli_env(tmp_path)["OMP_NUM_THREADS"]), max(1, available_cores() // 2))
    assert first["threads"] == second["threads"] == share


@pytest.mark.slow  # 25 s: submitit starts a fresh Python per trial
def test_submitit_local_launcher_runs_trials_as_separate_jobs(run_cnnlab, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cnnlab(
        "-m",
        "sweeper=tpe",
        "launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        LR,
        *TRIAL,
        "epochs=1",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    metrics = metrics_of(sweep)
    assert [m["status"] for m in metrics.values()] == ["completed", "completed"]
    assert all(m["threads"] == 1 for m in metrics.values())  # cpus_per_task=1 in launcher=submitit_local
    assert list(sweep.glob(".submitit/*")), "submitit writes its job files under .submitit"
    assert_report(sweep, 2)


def test_grid_sweep_is_reported_ranked_and_its_best_config_reruns(cnnlab_in_process, tmp_path: Path) -> None:
    sweep = tmp_path / "grid"
    result = cnnlab_in_process("-m", "lr=0.0001,0.1", *TRIAL, "epochs=1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    rows = assert_report(sweep, 2)
    accs = [float(r["best_val_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[1]
    assert "best: cnnlab train" in result.stdout
    best_lr = float(rows[0]["lr"])

    rerun = cnnlab_in_process("train", f"from_sweep={sweep}", "--cfg", "job")
    assert rerun.returncode == 0, rerun.stderr
    config = OmegaConf.create(rerun.stdout)
    assert config.lr == best_lr and config.epochs == 1 and config.dataset.train_size == 1000

    again = cnnlab_in_process("report", str(sweep))
    assert again.returncode == 0 and "best: cnnlab train" in again.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["report"], "usage: cnnlab report"),
        (["-m", "--cfg", "job", LR], "Only one of --run"),
        (["report", "no/such/folder"], "is not a sweep folder"),
        (["train", "from_sweep=no/such/folder"], "is not a sweep folder"),
        (["-m", "launcher=no_such_launcher", LR], "unknown launcher"),
        (["-m", "sweeper=tpe", "pruner=no_such_pruner", LR], "unknown pruner"),
        (["-m", "sweeper=no_such_sampler", LR], "unknown sweeper"),
        (["-m", "sweeper=tpe", "hydra.sweeper.n_trials=0", LR], "n_trials=0 is invalid"),
        (["-m", "sweeper=nsga2", "pruner=median", LR], "pruning needs a single objective"),
        (
            ["-m", "sweeper=tpe", "pruner=median", "hydra.sweeper.report_metric=val/accuracy", LR],
            "report_metric='val/accuracy' is unknown",
        ),
        (["-m", "sweeper=tpe", "pruner=median", "hydra.sweeper.report_metric=val/loss", LR], "other direction"),
        (["-m", "sweeper=tpe", "hydra.sweeper.directions=[up]", LR], "use maximize or minimize"),
        (
            ["-m", "sweeper=tpe", "hydra.sweeper.objectives=[best_val_acc,macs]", LR],
            "one hydra.sweeper.directions entry per",
        ),
        (["-m", "sweeper=tpe", "hydra.sweeper.storage=mystudy.db", LR], "is not a storage"),
    ],
)
def test_search_mistakes_fail_in_one_line(cli_in_process, tmp_path: Path, args: list[str], words: str) -> None:
    result = cli_in_process([*args, *([] if args[0] == "report" else TRIAL)], tmp_path)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
