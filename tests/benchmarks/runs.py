"""Running the real `cnnlab train` from a benchmark, and summarising repeated runs over seeds."""

import json
import shutil
import subprocess
import sys
from pathlib import Path


def cnnlab_executable() -> str:
    """The installed `cnnlab` command: on the PATH, or beside this Python when its environment is not activated."""
    return shutil.which("cnnlab") or str(Path(sys.executable).with_name("cnnlab"))


def train(overrides: list[str], run_dir: Path) -> dict:
    """Run `cnnlab train <overrides>` in `run_dir` (its output hidden) and return the run's metrics.json."""
    command = [cnnlab_executable(), "train", *overrides]
    print(" ".join(command), flush=True)
    if subprocess.run([*command, f"hydra.run.dir={run_dir}"], stdout=subprocess.DEVNULL).returncode != 0:
        sys.exit(f"the run in {run_dir} failed; see its train.log")
    return json.loads((run_dir / "metrics.json").read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5


def mean_images_per_s(metrics: dict) -> float:
    rates = [h["throughput/images_per_s"] for h in metrics["history"]]
    return sum(rates) / len(rates)
