"""Image folders held in memory against memory-mapped from the cache: the memory each takes, and batches per second.

Writes a folder of JPEGs (or takes `--data`), decodes it once into the cache, then in a fresh process per
path builds the run's loaders (dataset.source.memory_limit_gb: a large limit holds the images in memory, 0
maps them) and serves one epoch of augmented, normalised training batches. Reported after the epoch: the
process's anonymous memory (what only the process holds: the images when they are in memory) and its
mapped file pages (the cache's pages, which the system can drop and read again under memory pressure),
the time to load the set and the batches' images per second. The file cache is warm (the folder was just
decoded); a set larger than the machine's memory is read from disk at the disk's speed. Linux only.

    python tests/benchmarks/bench_image_storage.py                      # 4,000 images stored at 224 px
    python tests/benchmarks/bench_image_storage.py --images 20000 --size 160
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from data_args import add_data_argument, image_folder

MEASURE = """
import json, sys, time
import torch
from hydra import compose, initialize_config_module
import cnnlab.config.resolvers
from cnnlab.data.build import build_data

root, cache, size, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with initialize_config_module("cnnlab.conf", version_base=None):
    cfg = compose("train", overrides=[
        "dataset=imagefolder", f"dataset.root={root}", f"dataset.source.cache_dir={cache}",
        f"dataset.source.image_size={size}", f"dataset.source.memory_limit_gb={limit}",
        "dataset.augment.crop_padding=16",
    ])
start = time.perf_counter()
data = build_data(cfg.dataset, 128, 256, torch.device("cpu"), 0, False)
loaded = time.perf_counter() - start
start, count = time.perf_counter(), 0
for images, labels in data.train:
    count += len(labels)
served = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "mapped": data.train.data.mapped, "load_s": loaded, "images_per_s": count / served,
    "anon_gib": int(status["RssAnon"].split()[0]) / 1024**2, "file_gib": int(status["RssFile"].split()[0]) / 1024**2,
}))
"""


def write_folder(folder: Path, count: int, size: int, classes: int = 10) -> None:
    """`count` JPEGs of size x size in `classes` folders: smooth colour fields with noise, like photos compress."""
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BILINEAR)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-20, 20, (size, size, 3))
        path = folder / f"class{i % classes}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def measure(root: Path, cache: Path, size: int, limit: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(root), str(cache), str(size), limit], capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=4000, help="images to write when --data is not given")
    parser.add_argument("--size", type=int, default=224, help="dataset.source.image_size the images are stored at")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-storage-"))
    root = image_folder(args.data) if args.data else work / "images"
    if args.data is None:
        write_folder(root, args.images, args.size + 32)
    cache = work / "cache"
    measure(root, cache, args.size, "0")  # decodes into the cache once, untimed
    rows = {"in memory": measure(root, cache, args.size, "1000"), "memory-mapped": measure(root, cache, args.size, "0")}
    decoded = sum(f.stat().st_size for f in cache.rglob("*.u8")) / 1024**3
    print(f"\n{root}: images stored at {args.size}x{args.size}, {decoded:.2f} GiB decoded; one epoch, batch 128\n")
    print(f"{'path':<14} {'process GiB':>12} {'file pages GiB':>15} {'load s':>8} {'images/s':>9}")
    for name, row in rows.items():
        print(
            f"{name:<14} {row['anon_gib']:>12.2f} {row['file_gib']:>15.2f} {row['load_s']:>8.2f} "
            f"{row['images_per_s']:>9.0f}"
        )
    memory, mapped = rows["in memory"], rows["memory-mapped"]
    print(f"\nmemory-mapped / in memory: images/s {mapped['images_per_s'] / memory['images_per_s']:.2f}x")


if __name__ == "__main__":
    main()
