"""How long a mistake takes to be reported: wall time from starting `cnnlab` to its one-line error.

    python tests/benchmarks/bench_errors.py [--repeat 3]

Config mistakes are checked before torch is imported, any data is read or the run folder is made;
the target is under 2 s each. For comparison the table ends with mistakes that can only be found
once torch is loaded (a damaged checkpoint) or the data is read (a validation split larger than the data).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0
CONFIG_MISTAKES = [
    ["train", "lr=abc"],
    ["train", "lrr=0.1"],
    ["train", "model=nope"],
    ["train", "batch_size=0"],
    ["train", "dataset=imagefolder"],
    ["train", "dataset=imagefolder", "dataset.root=/no/such/folder"],
    ["train", "resume=/no/such/run"],
    ["eval", "ckpt=/no/such/run"],
    ["-m", "sweeper=tpe", "lr=tag(log,interval(0,1))"],
]


def cnnlab_command() -> str:
    beside = Path(sys.executable).with_name("cnnlab")
    return str(beside) if beside.exists() else "cnnlab"


def time_to_error(args: list[str], cwd: Path, repeat: int) -> tuple[float, str]:
    times, line = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run([cnnlab_command(), *args], cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        line = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"(exit {result.returncode})"
    return statistics.median(times), line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per mistake; the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "broken.pt").write_bytes(b"not a checkpoint")
        later = [
            ["eval", f"ckpt={work / 'broken.pt'}"],
            ["train", "experiment=smoke", "dataset.train_size=100", "dataset.val_size=500"],
        ]
        print(f"{'seconds':>8}  mistake -> message")
        config_times = []
        for mistake in CONFIG_MISTAKES:
            seconds, line = time_to_error(mistake, work, args.repeat)
            config_times.append(seconds)
            print(f"{seconds:8.2f}  {' '.join(mistake)} -> {line[:110]}")
        print(
            f"config mistakes: slowest {max(config_times):.2f} s, median {statistics.median(config_times):.2f} s "
            f"(target < {TARGET_S:.0f} s): {'met' if max(config_times) < TARGET_S else 'NOT met'}"
        )
        leftovers = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.name != "broken.pt")
        print(f"files left behind by the config mistakes: {leftovers[:3] if leftovers else 'none'}")
        for mistake in later:
            seconds, line = time_to_error(mistake, work, args.repeat)
            print(f"{seconds:8.2f}  {' '.join(mistake)} -> {line[:110]}  (needs torch / the data)")


if __name__ == "__main__":
    main()
