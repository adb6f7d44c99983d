"""launcher=slurm on a real one-node SLURM cluster that these tests start on this machine (as root).

SLURM is found, or installed with apt-get (Debian's slurm-wlm and munge); slurm.conf describes this
machine (`slurmd -C`) with accounting off, as a new user's first cluster often is. The tests run a TPE
search with median pruning, and a trial that SLURM stops twice - with scancel's SIGTERM, as a preemption,
and with its time limit - which resumes from its own checkpoint each time. The cluster is stopped after.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import cli_env, cnnlab_executable

pytestmark = pytest.mark.slow  # about 3 minutes with SLURM installed

TINY = [
    "experiment=smoke",
    "dataset.train_size=1000",
    "dataset.val_size=200",
    "dataset.test_size=100",
    "batch_size=32",
    "trainer.histograms=false",
    "hydra.launcher.cpus_per_task=1",
]
LONGER = ["dataset.train_size=3000", "hydra.sweeper.n_trials=1", "lr=tag(log,interval(1e-2,1e-1))"]  # ~4 s/epoch
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "slurmctld", "slurmd", "munged")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_or_install_slurm() -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("starting slurmctld, slurmd and munged needs root on Linux")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason='needs the extra: pip install ".[cluster]"')
    if all(shutil.which(c) for c in SLURM_COMMANDS):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it (slurm-wlm, munge)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # the package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not all(shutil.which(c) for c in SLURM_COMMANDS):
        pytest.skip(f"SLURM could not be installed: {(done.stderr or done.stdout).strip()[-300:]}")


def start_munge(folder: Path) -> Path | None:
    """munged, unless one already answers; returns the pid file of the one started here."""
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return None
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    if not Path("/etc/munge/munge.key").is_file():
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
    pid_file = Path("/run/munge/munged.pid")
    subprocess.run(["runuser", "-u", "munge", "--", "munged", f"--pid-file={pid_file}"], check=True)
    return pid_file


def slurm_conf(folder: Path) -> Path:
    """One node, this machine, as `slurmd -C` describes it; no accounting storage (sacct fails)."""
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    host = node.split()[0].removeprefix("NodeName=")
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir()
    lines = [
        "ClusterName=cnnlabtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root",
        "AuthType=auth/munge",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log' / 'slurmd.log'}",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def stop(pid_file: Path | None) -> None:
    """End a daemon this module started, by the process id it wrote."""
    if pid_file is None or not pid_file.is_file():
        return
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment that points SLURM's commands at a running one-node cluster."""
    find_or_install_slurm()
    folder = tmp_path_factory.mktemp("slurm")
    munged = start_munge(folder)
    conf = slurm_conf(folder)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [folder / "slurmctld.pid", folder / "slurmd.pid"]
    try:
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=env, check=True, timeout=60)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout:
            if time.monotonic() > deadline:
                pytest.skip(f"the SLURM node did not come up: {(folder / 'log' / 'slurmd.log').read_text()[-400:]}")
            time.sleep(0.5)
        version = subprocess.run(["sbatch", "--version"], env=env, capture_output=True, text=True).stdout.strip()
        print(f"\n{version}: one node, {conf}")
        yield {"SLURM_CONF": str(conf)}
    finally:
        for pid_file in [*daemons, munged]:
            stop(pid_file)


@pytest.fixture
def sweep_on_slurm(slurm: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """sweep_on_slurm(*overrides) starts `cnnlab -m launcher=slurm ...` into tmp_path/sweep; one left running by a
    failed test is stopped."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        command = [cnnlab_executable(), "-m", "launcher=slurm", *TINY, *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        log = open(tmp_path / "sweep.log", "w")  # the process writes it until it ends
        env = {**cli_env(tmp_path), **slurm}
        started.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # the sweep cancels its SLURM jobs
            process.wait(timeout=120)


def finished(process: subprocess.Popen, tmp_path: Path, timeout: float = 600) -> str:
    assert process.wait(timeout=timeout) == 0, (tmp_path / "sweep.log").read_text()[-3000:]
    output = (tmp_path / "sweep.log").read_text()
    assert "Bypassing sacct" not in output
    assert output.count("sacct does not work here (Slurm accounting storage is disabled)") == 1
    assert (tmp_path / "sweep" / "report.md").is_file()
    return output


def test_tpe_search_with_median_pruning_runs_on_slurm(sweep_on_slurm: Callable, tmp_path: Path) -> None:
    import optuna

    from cnnlab.sweeps.study import storage_for

    process = sweep_on_slurm(
        "sweeper=tpe",
        "pruner=median",
        "pruner.n_startup_trials=2",
        "lr=tag(log,interval(1e-6,1))",
        "epochs=2",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
    )
    finished(process, tmp_path)
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").glob("*/metrics.json")]
    assert len(statuses) == 6 and set(statuses) <= {"completed", "pruned"} and "pruned" in statuses, statuses
    study = optuna.load_study(study_name="cnnlab", storage=storage_for(None, tmp_path / "sweep"))
    assert all(t.intermediate_values for t in study.trials)  # each SLURM job reported its epochs to the pruner


def resumed_trial(tmp_path: Path) -> dict:
    """The one trial of a sweep that SLURM stopped: completed, every epoch trained once, in its own folder."""
    trial = tmp_path / "sweep" / "0"
    metrics = json.loads((trial / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, metrics["epochs_completed"] + 1))
    assert "resuming" in (trial / "train.log").read_text()
    assert (trial / ".hydra" / "resumed").is_dir() and len(list((tmp_path / "sweep").glob("[0-9]*"))) == 1
    return metrics


def test_a_preempted_trial_resumes_from_its_checkpoint(
    slurm: dict[str, str], sweep_on_slurm: Callable, tmp_path: Path
) -> None:
    process = sweep_on_slurm("sweeper=random", *LONGER, "epochs=4")
    train_log = tmp_path / "sweep" / "0" / "train.log"
    deadline = time.monotonic() + 300
    while not (train_log.is_file() and "epoch 2 " in train_log.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()[-3000:]
        time.sleep(0.3)
    (job,) = [p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.is_dir()]  # named by job id
    subprocess.run(["scancel", "--signal=TERM", job], env={**os.environ, **slurm}, check=True)  # as a preemption does
    output = finished(process, tmp_path)
    assert "submitting it again to resume from its checkpoint (1 of 3)" in output
    assert resumed_trial(tmp_path)["epochs_completed"] == 4


def test_a_trial_stopped_by_its_time_limit_resumes(sweep_on_slurm: Callable, tmp_path: Path) -> None:
    """A 1-minute limit, warned 30 s ahead (SIGUSR2): a trial of about 40 s of training takes two or more jobs."""
    limits = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=30"]
    process = sweep_on_slurm("sweeper=random", *LONGER, "epochs=10", *limits)
    output = finished(process, tmp_path)
    assert "submitting it again to resume from its checkpoint" in output
    assert resumed_trial(tmp_path)["epochs_completed"] == 10
