"""Image folders with one subfolder per class, decoded once and cached on disk as a uint8 tensor.

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

from cnnlab.atomic import atomic_torch_save
from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
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


def _decode_all(files: list[tuple[Path, int]], image_size: int | None, channels: int, max_pixels: int) -> ImageSet:
    decoded = decode_images([path for path, _ in files], channels, max_pixels)
    kept = [(img, label) for img, (_, label) in zip(decoded, files) if img is not None]
    if not kept:
        raise UserError("imagefolder: none of the files could be decoded as images")
    size = (image_size, image_size) if image_size else tuple(kept[0][0].shape[-2:])
    images = torch.stack([resize_image(img, size) for img, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return ImageSet(images, labels)


def load_image_folder(
    root: str,
    image_size: int | None = None,
    channels: int = 3,
    cache_dir: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> SourceData:
    """Decode (or load from cache) the train and optional test split of an image folder."""
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
    cache = Path(cache_dir).expanduser() / f"imagefolder-{key}.pt" if cache_dir else None
    if cache is not None and cache.exists():
        try:
            blob = torch.load(cache, weights_only=True)
            log.info("imagefolder: loaded decoded images from cache %s", cache)
            return SourceData(ImageSet(*blob["train"]), ImageSet(*blob["test"]) if "test" in blob else None, classes)
        except (RuntimeError, OSError, KeyError, EOFError) as e:
            log.warning("imagefolder: ignoring unreadable cache %s (%s)", cache, e)
    log.info("imagefolder: decoding %d images under %s", sum(len(f) for f in files.values()), base)
    splits = {split: _decode_all(f, image_size, channels, max_pixels) for split, f in files.items()}
    if "test" in splits and splits["test"].images.shape[1:] != splits["train"].images.shape[1:]:
        splits["test"] = ImageSet(
            torch.stack([resize_image(img, tuple(splits["train"].images.shape[-2:])) for img in splits["test"].images]),
            splits["test"].labels,
        )
    if cache is not None:
        try:
            atomic_torch_save({name: (s.images, s.labels) for name, s in splits.items()}, cache)
        except OSError as e:
            log.warning("imagefolder: could not write cache %s (%s); the folder is decoded again next run", cache, e)
    return SourceData(splits["train"], splits.get("test"), classes)
