"""Kill cnnlab with SIGKILL at random moments, resume it each time, and count what was lost.

    python tests/faults/random_kills.py --kills 20              a training run (default)
    python tests/faults/random_kills.py --mode sweep --kills 8  a random-search sweep

Run mode: a reference run trains without interruption beside a victim run with the same settings.
The victim is killed at a random point of its next two epochs, or (every third kill) inside a
checkpoint write: frozen with SIGSTOP the moment the temporary file appears, then killed. After
each kill every checkpoint must load, last.pt must hold every epoch printed before the kill but the
one whose write was cut, and the resumed run must start right after last.pt's epoch; any shortfall
counts as lost epochs. At the end the victim's history and final weights must equal the reference's.

Sweep mode: each kill lands while a trial trains, and the same command is run again. At the end the
sweep must hold exactly n_trials completed trials, no finished trial touched again, no parameters
completed twice, and every trial cut short completed under a later number.

Prints "N kills, N resumes, 0 lost epochs, 0 unreadable checkpoints" (or "... trials") and exits 1
on any loss. Every process runs with one thread, so CPU results are deterministic.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RUN = [
    "train",
    "experiment=smoke",
    "model=simple_cnn",
    "device=cpu",
    "dataset.train_size=2400",
    "dataset.val_size=200",
    "dataset.test_size=200",
    "batch_size=32",
]  # about 2 s an epoch on one thread, 0.5 MB checkpoints
SWEEP = [
    "-m",
    "sweeper=random",
    "lr=tag(log,interval(1e-2,0.5))",
    "experiment=smoke",
    "epochs=2",
    "dataset.train_size=600",
    "dataset.val_size=200",
    "dataset.test_size=200",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def cnnlab_command() -> str:
    beside = Path(sys.executable).with_name("cnnlab")
    return str(beside) if beside.exists() else "cnnlab"


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [cnnlab_command(), *args], cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def checkpoint_epochs(folder: Path) -> tuple[dict[str, int], int]:
    """{name: epoch} of every checkpoint that loads, and how many did not."""
    epochs, unreadable = {}, 0
    for path in sorted(folder.glob("*.pt")):
        try:
            epochs[path.name] = int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
        except Exception:  # noqa: BLE001 - any failure to load is what this script counts
            unreadable += 1
    return epochs, unreadable


def write_in_progress(folder: Path) -> bool:
    return folder.is_dir() and any(name.endswith(".tmp") for name in os.listdir(folder))


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None = None, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(poll_s)
    return False


def comparable(metrics: dict) -> dict:
    history = [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in metrics["history"]]
    return {"best_val_acc": metrics["best_val_acc"], "test_acc": metrics["test_acc"], "history": history}


def epochs_printed(output: str) -> list[tuple[int, float]]:
    """(epoch, seconds) of every epoch summary line, e.g. 'epoch 3 | ... | 1.8 s'."""
    return [(int(e), float(t)) for e, t in re.findall(r"^epoch (\d+) \|.*\| ([\d.]+) s$", output, re.M)]


def resume_gap(output: str, expected_start: int) -> int:
    """Epochs the checkpoint held that the resumed process did not start after (a missing line counts all)."""
    match = re.search(r"resuming .* at epoch (\d+)", output)
    return expected_start - 1 if match is None else max(0, expected_start - int(match.group(1)))


def run_mode(kills: int, epochs: int, work: Path, rng: random.Random) -> bool:
    """Every third kill waits for a checkpoint write and freezes the process inside it; the others land
    at a random point of the next two epochs (scaled by the measured epoch time, so any CPU works)."""
    args = [*RUN, f"epochs={epochs}"]
    reference, victim = work / "reference", work / "victim"
    log = work / "victim.log"
    checkpoints = victim / "checkpoints"

    def since_last_kill() -> str:
        return log.read_text().split("== kill")[-1]

    def training() -> bool:  # the current process has printed its run header (after any "resuming" line)
        return "parameters," in since_last_kill() and (checkpoints / "last.pt").is_file()

    straight = start([*args, f"hydra.run.dir={reference}"], work, work / "reference.log")
    proc = start([*args, f"hydra.run.dir={victim}"], work, log)
    lost = unreadable = during_write = done = 0
    expected_start: int | None = None  # the epoch the current (resumed) process must start at
    while done < kills and wait_until(training, 180, proc):
        if expected_start is not None:
            lost += resume_gap(since_last_kill(), expected_start)
            expected_start = None
        if (done + 1) % 3 == 0:
            wait_until(lambda: write_in_progress(checkpoints), 60, proc, poll_s=0.0005)
        else:
            epoch_s = ([t for _, t in epochs_printed(log.read_text())] or [2.0])[-1]
            time.sleep(rng.uniform(0, 2 * epoch_s))
        if proc.poll() is not None:
            break  # it finished first; the kills end here
        os.killpg(proc.pid, signal.SIGSTOP)  # frozen where it is, then killed: a write caught stays caught
        hit = write_in_progress(checkpoints)
        kill(proc)
        done += 1
        during_write += hit
        printed = max((e for e, _ in epochs_printed(since_last_kill())), default=0)
        on_disk, bad = checkpoint_epochs(checkpoints)
        unreadable += bad
        # an epoch is printed just before its checkpoint is written: a kill in between may cost that one
        lost += max(0, printed - on_disk.get("last.pt", 0) - 1)
        with open(log, "a") as out:
            out.write(
                f"\n== kill {done}: epochs printed {printed}, checkpoint epochs {on_disk}, {bad} unreadable, "
                f"during a write: {hit}\n"
            )
        expected_start = on_disk.get("last.pt", 0) + 1
        proc = start(["train", f"resume={victim}"], work, log)
    if expected_start is not None and wait_until(lambda: "resuming" in since_last_kill(), 180, proc):
        lost += resume_gap(since_last_kill(), expected_start)
    finished = proc.wait(timeout=900) == 0 and straight.wait(timeout=900) == 0
    same = finished and comparable(json.loads((victim / "metrics.json").read_text())) == comparable(
        json.loads((reference / "metrics.json").read_text())
    )
    if finished:
        weights = [torch.load(f / "checkpoints" / "last.pt", weights_only=True)["model"] for f in (victim, reference)]
        same = same and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    print(
        f"{done} kills, {done} resumes, {lost} lost epochs, {unreadable} unreadable checkpoints "
        f"({during_write} kills during a checkpoint write); the killed run ends identical to an uninterrupted one: "
        f"{'yes' if same else 'NO'} (log: {log})"
    )
    return done == kills and lost == 0 and unreadable == 0 and same


def trials(sweep: Path) -> dict[str, dict]:
    """{trial folder: {"status", "ended_at", "overrides"}} of every trial folder of the sweep."""
    found = {}
    for folder in sweep.iterdir():
        if not folder.name.isdigit():
            continue
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            metrics = {}  # killed before its first epoch was recorded
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = overrides_file.read_text() if overrides_file.is_file() else ""
        found[folder.name] = {
            "status": metrics.get("status"),
            "ended_at": metrics.get("ended_at"),
            "overrides": overrides,
        }
    return found


def sweep_mode(kills: int, n_trials: int, work: Path, rng: random.Random) -> bool:
    """Each kill lands while a trial trains. At the end: n_trials completed trials, each finished trial
    untouched since it finished, no parameters completed twice, every interrupted trial's parameters
    completed under a later number."""
    sweep = work / "sweep"
    args = [*SWEEP, f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep}"]
    log = work / "sweep.log"
    finished: dict[str, str] = {}
    done = 0
    while done < kills:
        before = set(trials(sweep)) if sweep.is_dir() else set()
        proc = start(args, work, log)

        def new_trial_running(before: set[str] = before) -> bool:
            running = [n for n, t in trials(sweep).items() if t["status"] == "running"] if sweep.is_dir() else []
            return any(n not in before for n in running)

        started = wait_until(
            new_trial_running,
            180,
            proc,
        )
        time.sleep(rng.uniform(0, 2))  # into that trial's training (a trial takes a few seconds)
        if not started or proc.poll() is not None:
            break  # the sweep ended before it could be killed again
        kill(proc)
        done += 1
        finished.update({name: t["ended_at"] for name, t in trials(sweep).items() if t["status"] == "completed"})
    final = subprocess.run([cnnlab_command(), *args], cwd=work, env=ENV, capture_output=True, text=True, timeout=900)
    everything = trials(sweep)
    completed = [t["overrides"] for t in everything.values() if t["status"] == "completed"]
    repeated = sum(everything[name]["ended_at"] != ended for name, ended in finished.items())
    repeated += len(completed) - len(set(completed))
    cut_short = [t["overrides"] for t in everything.values() if t["status"] in ("running", None) and t["overrides"]]
    lost = sum(o not in completed for o in cut_short) + max(0, n_trials - len(completed))
    print(
        f"{done} kills, {done} resumes, {lost} lost trials, {repeated} repeated trials; {len(completed)} of {n_trials} "
        f"trials completed, {len(cut_short)} cut short and retried (exit {final.returncode}; log: {log})"
    )
    return done == kills and final.returncode == 0 and lost == 0 and repeated == 0 and len(completed) == n_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["run", "sweep"], default="run")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=0, help="run mode: epochs of the killed run (default: kills + 4)")
    parser.add_argument("--trials", type=int, default=6, help="sweep mode: n_trials of the killed sweep")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-kills-"))
    rng = random.Random(args.seed)
    if args.mode == "run":
        ok = run_mode(args.kills, args.epochs or args.kills + 4, work, rng)
    else:
        ok = sweep_mode(args.kills, args.trials, work, rng)
    if not args.keep and ok:
        shutil.rmtree(work)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
