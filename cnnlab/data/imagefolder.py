"""Image folders with one subfolder per class, decoded once and cached on disk as raw uint8 rows.

Layouts: root/train/<class>/* with an optional root/test/<class>/*, or root/<class>/*.
The cache key covers every file's path, size and modification time plus the decode settings,
so adding, removing or editing an image makes the next run decode the folder again.
"""

import hashlib
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data.image_cache import CacheEntry, describe_bytes, memory_limit
from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

log = logging.getLogger(__name__)
CACHE_FORMAT = 2
DECODE_CHUNK = 256  # images decoded at once: bounds the memory held in full-size pixels
DEFAULT_MAX_PIXELS = 64_000_000  # images declaring more are skipped: a guard against decompression bombs
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _class_folders(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            raise UserError(f"imagefolder: {folder} is missing; every split needs the same class folders")
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise UserError(f"imagefolder: class folder {folder} has no images; add some or remove the folder")
        files.extend((p, label) for p in images)
    return files


def _fingerprint(files: list[tuple[Path, int]], root: Path, settings: tuple) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{settings}".encode())
    for path, label in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decode_image(path: Path, channels: int, max_pixels: int) -> torch.Tensor | None:
    """The image as a CHW uint8 tensor, or None (with a warning) for a file that is unreadable or too large.

    The size is read from the header before anything is decoded: a small file can declare a huge
    image (a decompression bomb) whose decoding would exhaust memory. Pillow decodes, since it
    reports damaged files as errors (torchvision's PNG decoder crashes the process on short image data).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                log.warning(
                    "imagefolder: skipping %s (%dx%d pixels is over dataset.source.max_pixels=%d, a guard "
                    "against decompression bombs; raise it if the image is genuine)",
                    path,
                    width,
                    height,
                    max_pixels,
                )
                return None
            pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    except Image.DecompressionBombError as e:
        log.warning("imagefolder: skipping %s (%s)", path, e)
        return None
    except (OSError, ValueError, SyntaxError) as e:
        log.warning("imagefolder: skipping %s (not a readable image: %s)", path, str(e).splitlines()[0])
        return None
    return torch.from_numpy(pixels.reshape(height, width, channels).copy()).permute(2, 0, 1).contiguous()


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 CHW image at (height, width), antialiased: how a run's images were made one size, and so
    how images given to a trained model must be made its input size."""
    if tuple(image.shape[-2:]) == size:
        return image
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def decode_images(paths: list[Path], channels: int, max_pixels: int) -> list[torch.Tensor | None]:
    """decode_image on several files at once, in threads (Pillow releases the GIL while it decodes)."""
    # Pillow warns about large headers itself; decode_image says the same in cnnlab's words
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return list(pool.map(lambda path: decode_image(path, channels, max_pixels), paths))


def _first_image_size(files: list[tuple[Path, int]], channels: int, max_pixels: int) -> tuple[int, int]:
    """The size of the first image that decodes: every image is made that size when no image_size is set."""
    for path, _ in files:
        image = decode_image(path, channels, max_pixels)
        if image is not None:
            return int(image.shape[1]), int(image.shape[2])
    raise UserError("imagefolder: none of the files could be decoded as images")


def _decode_into(files: list[tuple[Path, int]], target: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """Decode `files` a chunk at a time into the rows of `target` (in memory or a mapped file), skipping the
    unreadable ones; returns the labels of the rows filled. Only one chunk of full-size images is ever held."""
    size, kept = tuple(target.shape[-2:]), []
    for start in range(0, len(files), DECODE_CHUNK):
        chunk = files[start : start + DECODE_CHUNK]
        for image, (_, label) in zip(decode_images([path for path, _ in chunk], target.shape[1], max_pixels), chunk):
            if image is not None:
                target[len(kept)] = resize_image(image, size)
                kept.append(label)
    if not kept:
        raise UserError("imagefolder: none of the files could be decoded as images")
    return torch.tensor(kept, dtype=torch.int64)


Listing = dict[str, list[tuple[Path, int]]]  # split -> (file, label) pairs


def _decode_in_memory(files: Listing, shape: tuple[int, ...], max_pixels: int) -> dict[str, ImageSet]:
    splits = {}
    for split, listed in files.items():
        target = torch.empty((len(listed), *shape), dtype=torch.uint8)
        labels = _decode_into(listed, target, max_pixels)
        splits[split] = ImageSet(target[: len(labels)], labels)
    return splits


def _decode_to_cache(entry: CacheEntry, files: Listing, shape: tuple[int, ...], max_pixels: int) -> None:
    with entry.writing(shape, {split: len(listed) for split, listed in files.items()}) as writer:
        for split, listed in files.items():
            writer.labels[split] = _decode_into(listed, writer.targets[split], max_pixels)


def load_image_folder(
    root: str,
    image_size: int | None = None,
    channels: int = 3,
    cache_dir: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory_limit_gb: float | str = "auto",
) -> SourceData:
    """The train and optional test split of an image folder, decoded once and cached.

    The decoded set is held in memory when it fits `memory_limit_gb`, else memory-mapped from the cache
    (each batch then reads only its own images from disk or the page cache).
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"imagefolder: dataset.root={root} is not a folder; point it at your images")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise UserError(
            f"dataset.source.max_pixels={max_pixels} is invalid: use a whole number of pixels such as 64000000"
        )
    if channels not in (1, 3):
        raise UserError(f"dataset.source.channels={channels} is invalid: use 1 (grayscale) or 3 (RGB)")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(
            f"dataset.source.image_size={image_size!r} is invalid: use null (the images' own size) or a whole "
            "number of pixels >= 1, such as 32"
        )
    limit = memory_limit(memory_limit_gb)
    train_dir = base / "train" if (base / "train").is_dir() else base
    classes = [p.name for p in _class_folders(train_dir)]
    if not classes:
        raise UserError(f"imagefolder: {train_dir} has no class subfolders; expected {train_dir}/<class>/<image>")
    split_dirs = {"train": train_dir}
    if train_dir != base and (base / "test").is_dir():
        split_dirs["test"] = base / "test"
        unknown = sorted(p.name for p in _class_folders(base / "test") if p.name not in classes)
        if unknown:
            raise UserError(
                f"imagefolder: {base / 'test'} has class folders that train/ lacks ({', '.join(unknown)}); "
                "add them to train/ or remove them from test/"
            )
    files = {split: _list_files(folder, classes) for split, folder in split_dirs.items()}
    key = _fingerprint([f for split in files.values() for f in split], base, (image_size, channels, max_pixels))
    entry = CacheEntry(Path(cache_dir).expanduser() / f"imagefolder-{key}") if cache_dir else None
    total = sum(len(listed) for listed in files.values())
    size = (image_size, image_size) if image_size else _first_image_size(files["train"], channels, max_pixels)
    shape = (channels, *size)
    needed = total * channels * size[0] * size[1]
    mapped = needed > limit
    where = (
        f"memory-mapped from the cache, as {describe_bytes(needed)} decoded is over the memory limit of "
        f"{describe_bytes(limit)} (dataset.source.memory_limit_gb)"
        if mapped
        else f"held in memory ({describe_bytes(needed)} decoded, within the limit of {describe_bytes(limit)})"
    )
    if entry is None:
        if mapped:
            raise UserError(
                f"imagefolder: {total} images at {channels}x{size[0]}x{size[1]} take {describe_bytes(needed)} "
                f"decoded, over the memory limit of {describe_bytes(limit)}; set dataset.source.cache_dir to a folder "
                "with that much free disk so they can be memory-mapped, or lower dataset.source.image_size"
            )
        log.info("imagefolder: decoding %d images under %s; %s", total, base, where)
        splits = _decode_in_memory(files, shape, max_pixels)
    else:
        splits = entry.read(mapped) if entry.exists() else None
        if splits is None:
            log.info("imagefolder: decoding %d images under %s into the cache %s", total, base, entry.folder)
            try:
                _decode_to_cache(entry, files, shape, max_pixels)
                splits = entry.read(mapped)
                if splits is None:
                    raise OSError("the cache just written could not be read back")
            except OSError as e:
                if mapped:
                    raise UserError(
                        f"imagefolder: could not write the cache {entry.folder} ({e}); the images need "
                        f"{describe_bytes(needed)} of disk there: free some or point dataset.source.cache_dir elsewhere"
                    ) from e
                log.warning("imagefolder: could not write cache %s (%s); decoding in memory instead", entry.folder, e)
                splits = _decode_in_memory(files, shape, max_pixels)
        log.info("imagefolder: %d images %s", sum(len(s) for s in splits.values()), where)
    return SourceData(splits["train"], splits.get("test"), classes)
