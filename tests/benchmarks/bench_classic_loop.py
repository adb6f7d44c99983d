"""The course's simple CNN: a cnnlab epoch against the classic torchvision DataLoader loop, in one run.

Classic: a torchvision-style dataset that turns each stored uint8 image into a PIL image and applies
RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and Normalize one sample at a time, a
DataLoader (timed with 0 and with 2 worker processes; the faster one counts), an NCHW model and the
usual zero_grad / forward / backward / step loop. cnnlab: the epoch `cnnlab train model=simple_cnn`
runs (batched uint8 augmentation in memory, channels_last, progress, logging, checkpoint), minus its
validation pass. Same images, same model, batch size and optimizer settings.

    python tests/benchmarks/bench_classic_loop.py                        # synthetic data, about 2 minutes
    python tests/benchmarks/bench_classic_loop.py --data cifar10-jpeg.tar.gz
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cnnlab.data.build import build_data
from cnnlab.training.components import build_model, configured_loss, configured_optimizer
from cnnlab.training.run import seed_everything

from bench_loop_overhead import loop_epoch
from data_args import add_data_argument, compose_train, dataset_overrides

TARGET = 3.0


class PilImages(Dataset):
    """What torchvision's CIFAR10 dataset does per sample: array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: transforms.Compose) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def classic_epoch(
    cfg, images: np.ndarray, labels: np.ndarray, mean: list[float], std: list[float], workers: int
) -> float:
    """Seconds for one epoch of the classic loop."""
    transform = transforms.Compose(
        [
            transforms.RandomCrop(images.shape[1], padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    loader = DataLoader(
        PilImages(images, labels, transform),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=False,
    )
    seed_everything(cfg.seed)
    height, width, channels = images.shape[1:]
    model = build_model(cfg, (channels, height, width), int(labels.max()) + 1).train()
    optimizer, loss_fn = configured_optimizer(cfg, model), configured_loss(cfg)
    start = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each side")
    parser.add_argument("--train-size", type=int, default=20_000, help="synthetic images (10% held out)")
    parser.add_argument("overrides", nargs="*", help="more train overrides, e.g. batch_size=256")
    args = parser.parse_args()

    overrides = [
        "model=simple_cnn",
        "batch_size=128",
        *dataset_overrides(args.data, args.train_size),
        "epochs=1",
        "device=cpu",
        *args.overrides,
    ]
    cfg = compose_train(overrides)
    data = build_data(cfg.dataset, cfg.batch_size, cfg.trainer.eval_batch_size, torch.device("cpu"), cfg.seed, False)
    images = data.train.data.images.permute(0, 2, 3, 1).numpy()  # HWC uint8, as torchvision datasets store them
    labels = data.train.data.labels.numpy()
    mean, std = data.train.mean.flatten().tolist(), data.train.std.flatten().tolist()
    work = Path(tempfile.mkdtemp(prefix="cnnlab-bench-classic-"))

    times: dict[str, list[float]] = {"classic, 0 workers": [], "classic, 2 workers": [], "cnnlab": []}
    for repeat in range(-1, args.repeats):  # round -1 warms every side up (kernels, allocator) and is not counted
        round_times = {
            "classic, 0 workers": classic_epoch(cfg, images, labels, mean, std, workers=0),
            "classic, 2 workers": classic_epoch(cfg, images, labels, mean, std, workers=2),
            "cnnlab": loop_epoch(cfg, work)[0],
        }
        print(
            f"{'warm-up' if repeat < 0 else f'repeat {repeat + 1}'}: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in round_times.items()),
            flush=True,
        )
        if repeat >= 0:
            for name, seconds in round_times.items():
                times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    classic = min(median["classic, 0 workers"], median["classic, 2 workers"])
    speedup = classic / median["cnnlab"]
    count = len(labels) // cfg.batch_size * cfg.batch_size
    print(
        f"\nsimple_cnn, batch {cfg.batch_size}, {count:,} training images per epoch, {cfg.dataset.name}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}\n"
    )
    print("| loop | seconds per epoch | images/s |")
    print("|---|---:|---:|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.2f} | {count / seconds:,.0f} |")
    print(
        f"\ncnnlab is {speedup:.2f}x faster per epoch than the faster classic loop (target >= {TARGET:.0f}x): "
        f"{'met' if speedup >= TARGET else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
