"""Kill cnnlab with SIGKILL at random moments, resume it each time, and count what was lost.

    python tests/faults/random_kills.py --kills 20            a training run (default)
    python tests/faults/random_kills.py --mode sweep --kills 8  a random-search sweep

Run mode: a reference run trains without interruption beside a victim run with the same settings.
The victim is killed at a random point of an epoch, or (one kill in three) the moment a checkpoint
write begins, then resumed with `resume=<run>`. After every kill each checkpoint must load, and the
resumed run must start right after the epoch its last.pt holds. At the end the victim's history
and final weights must equal the reference's: nothing lost, nothing changed.

Sweep mode: the sweep is killed at random points and run again with the same command. Trials that
had finished must never run again, and the sweep must end with exactly n_trials finished trials.

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

RUN = ["train", "experiment=smoke", "model=simple_cnn", "device=cpu", "dataset.train_size=2400", "dataset.val_size=200",
       "dataset.test_size=200", "batch_size=32"]  # about 2 s an epoch on one thread, 0.5 MB checkpoints
SWEEP = ["-m", "sweeper=random", "lr=tag(log,interval(1e-2,0.5))", "experiment=smoke", "epochs=2",
         "dataset.train_size=600", "dataset.val_size=200", "dataset.test_size=200"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ENV.pop("HYDRA_FULL_ERROR", None)


def cnnlab_command() -> str:
    beside = Path(sys.executable).with_name("cnnlab")
    return str(beside) if beside.exists() else "cnnlab"


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen([cnnlab_command(), *args], cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


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


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
    return False


def comparable(metrics: dict) -> dict:
    history = [{k: v for k, v in h.items() if not k.startswith(("time/", "throughput/"))} for h in metrics["history"]]
    return {"best_val_acc": metrics["best_val_acc"], "test_acc": metrics["test_acc"], "history": history}


def run_mode(kills: int, epochs: int, work: Path, rng: random.Random) -> bool:
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
    expected_start: int | None = None  # the epoch a resumed process must start at
    while done < kills and wait_until(training, 180, proc):
        if expected_start is not None:
            lost += resume_gap(since_last_kill(), expected_start)
        if rng.random() < 1 / 3:
            wait_until(lambda: write_in_progress(checkpoints), 30, proc)
        else:
            time.sleep(rng.uniform(0, 5))  # up to about two epochs
        if proc.poll() is not None:
            break  # it finished first; the kills end here
        kill(proc)
        done += 1
        hit = write_in_progress(checkpoints)  # the killed write's temporary file is still there
        during_write += hit
        on_disk, bad = checkpoint_epochs(checkpoints)
        unreadable += bad
        with open(log, "a") as out:
            out.write(f"\n== kill {done}: checkpoint epochs {on_disk}, {bad} unreadable, during a write: {hit}\n")
        expected_start = on_disk.get("last.pt", 0) + 1
        proc = start(["train", f"resume={victim}"], work, log)
    if expected_start is not None and wait_until(lambda: "resuming" in since_last_kill(), 180, proc):
        lost += resume_gap(since_last_kill(), expected_start)
    finished = proc.wait(timeout=900) == 0 and straight.wait(timeout=900) == 0
    same = finished and comparable(json.loads((victim / "metrics.json").read_text())) == comparable(
        json.loads((reference / "metrics.json").read_text()))
    if finished:
        weights = [torch.load(f / "checkpoints" / "last.pt", weights_only=True)["model"] for f in (victim, reference)]
        same = same and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    print(f"{done} kills, {done} resumes, {lost} lost epochs, {unreadable} unreadable checkpoints "
          f"({during_write} kills during a checkpoint write); the killed run ends identical to an uninterrupted one: "
          f"{'yes' if same else 'NO'} (log: {log})")
    return done == kills and lost == 0 and unreadable == 0 and same


def resume_gap(output: str, expected_start: int) -> int:
    """Epochs the checkpoint held that the resumed process did not start after (a missing line counts all)."""
    match = re.search(r"resuming .* at epoch (\d+)", output)
    return expected_start - 1 if match is None else max(0, expected_start - int(match.group(1)))


def trial_states(sweep: Path) -> dict[str, str]:
    """{trial: ended_at} of every trial folder whose metrics.json says it completed."""
    states = {}
    for path in sweep.glob("*/metrics.json"):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if metrics.get("status") == "completed":
            states[path.parent.name] = metrics.get("ended_at")
    return states


def sweep_mode(kills: int, trials: int, work: Path, rng: random.Random) -> bool:
    sweep = work / "sweep"
    args = [*SWEEP, f"hydra.sweeper.n_trials={trials}", f"hydra.sweep.dir={sweep}"]
    log = work / "sweep.log"
    finished: dict[str, str] = {}
    repeated = resumes = done = 0
    for _ in range(kills):
        proc = start(args, work, log)
        time.sleep(rng.uniform(3, 12))  # the first seconds are Python starting; trials take a few seconds each
        if proc.poll() is not None:
            break
        kill(proc)
        done += 1
        states = trial_states(sweep)
        repeated += sum(states.get(t) != ended for t, ended in finished.items())
        finished.update(states)
        resumes += 1
    final = subprocess.run([cnnlab_command(), *args], cwd=work, env=ENV, capture_output=True, text=True, timeout=900)
    states = trial_states(sweep)
    repeated += sum(states.get(t) != ended for t, ended in finished.items())
    lost = max(0, trials - len(states))
    extra = max(0, len(states) - trials)
    print(f"{done} kills, {resumes} resumes, {lost} lost trials, {repeated} repeated trials, {extra} extra trials; "
          f"{len(states)} of {trials} trials completed (exit {final.returncode}; log: {log})")
    return final.returncode == 0 and lost == 0 and repeated == 0 and extra == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["run", "sweep"], default="run")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20, help="run mode: epochs of the killed run")
    parser.add_argument("--trials", type=int, default=6, help="sweep mode: n_trials of the killed sweep")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-kills-"))
    rng = random.Random(args.seed)
    ok = run_mode(args.kills, args.epochs, work, rng) if args.mode == "run" else sweep_mode(args.kills, args.trials, work, rng)
    if not args.keep and ok:
        shutil.rmtree(work)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
