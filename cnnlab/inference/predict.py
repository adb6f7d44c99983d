"""`cnnlab predict`: classify image files with a trained model; score it too when the folder is labelled.

Images are decoded and resized exactly as the run's image folder was, to the checkpoint's input shape.
A folder is labelled when its sub-folders are classes of the checkpoint: `<folder>/<class>/...`, or
cnnlab's training layout `<folder>/train/<class>/...` and `<folder>/test/<class>/...`. A folder whose
sub-folders are no classes at all is a folder of unlabelled images; one mixing both is refused, since
a misspelt class folder would otherwise drop out of the scores unnoticed.
"""

import csv
import glob
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from cnnlab.atomic import atomic_bytes_write, atomic_json_dump
from cnnlab.data.imagefolder import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, decode_images, resize_image
from cnnlab.device import autocast, resolve_device
from cnnlab.errors import UserError
from cnnlab.inference.trained import TrainedModel, load_trained
from cnnlab.tracking.plots import save_misclassified
from cnnlab.tracking.terminal import print_class_metrics, print_predictions
from cnnlab.training.metrics import confusion_matrix, precision_recall_f1

log = logging.getLogger("cnnlab")
CSV_FILE = "predictions.csv"
SUMMARY_FILE = "predict.json"
GALLERY_FILE = "misclassified.png"
SPLIT_FOLDERS = ("train", "test")  # cnnlab's image-folder layout: <folder>/train/<class>/...
TABLE_ROWS = 20  # predictions shown in the terminal; all of them are in the CSV
PATH_WIDTH = 48  # characters of a path shown in the terminal table
SUFFIXES = ", ".join(sorted(IMAGE_SUFFIXES))


@dataclass
class Predictions:
    """What the model said about each image it could read (rows in file order; tensors on the CPU)."""

    paths: list[Path]
    top_probs: torch.Tensor  # (N, k), highest first
    top_classes: torch.Tensor  # (N, k) class indices
    labels: torch.Tensor | None  # (N,) true class indices, for a labelled folder
    skipped: int  # files that could not be decoded


def predict_images(cfg: DictConfig, run_dir: Path) -> float | None:
    """Classify, print, and write predictions.csv, predict.json (and misclassified.png); return the accuracy
    of a labelled folder, else None."""
    spec = str(cfg.inputs)
    files, root = find_images(spec)
    trained = load_trained(cfg.ckpt, resolve_device(str(cfg.device)), bool(cfg.trust_code))
    labels = true_labels(files, root, trained.classes) if root is not None else None
    predictions = classify(trained, files, labels, int(cfg.batch_size), int(cfg.top_k))
    if not predictions.paths:
        raise UserError(
            f"no file of inputs={spec} could be read as an image ({len(files)} tried, see the warnings above); "
            "point inputs at image files"
        )
    write_csv(predictions, trained.classes, run_dir / CSV_FILE)
    show_predictions(predictions, trained.classes, root, run_dir / CSV_FILE)
    summary: dict[str, Any] = {
        "checkpoint": str(trained.path),
        "epoch": trained.epoch,
        "inputs": spec,
        "count": len(predictions.paths),
        "skipped": predictions.skipped,
        "top_k": predictions.top_classes.shape[1],
    }
    written = [CSV_FILE, SUMMARY_FILE]
    if predictions.labels is not None:
        summary.update(score(predictions.top_classes[:, 0], predictions.labels, trained.classes))
        if draw_mistakes(predictions, predictions.labels, trained, int(cfg.gallery), run_dir / GALLERY_FILE):
            written.append(GALLERY_FILE)
    atomic_json_dump(summary, run_dir / SUMMARY_FILE)
    if predictions.skipped:
        log.warning("%d of %d files could not be read and were skipped", predictions.skipped, len(files))
    count = len(predictions.paths)
    log.info("classified %d image%s; wrote %s to %s", count, "" if count == 1 else "s", ", ".join(written), run_dir)
    return summary.get("accuracy")


# --- which files, and their classes ------------------------------------------------------------------


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def find_images(spec: str) -> tuple[list[Path], Path | None]:
    """The image files `inputs` names (sorted), and the folder when it names one (for labels and shorter paths).

    A file is taken as it is; a folder is searched recursively for image suffixes (hidden files and folders
    left out); anything else is a glob pattern, `**` included, of which the image files count.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return [path], None
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        images = [p for p in images if _visible(p, path)]
        if not images:
            raise UserError(
                f"inputs={spec} has no images (files ending in {SUFFIXES}, in it or its sub-folders); "
                "point inputs at a folder of images"
            )
        return images, path
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
    images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not images:
        raise UserError(
            f"inputs={spec} matches {len(matches)} paths but no image files ({SUFFIXES}); check the pattern"
        )
    return images, None


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folders(folder: Path, classes: list[str]) -> dict[Path, int] | None:
    """The class folders of a labelled folder (folder -> class index), or None for a folder of unlabelled images."""
    top = _subfolders(folder)
    names = {p.name for p in top}
    split_layout = bool(top) and names <= set(SPLIT_FOLDERS) and not names & set(classes)
    candidates = [p for split in top for p in _subfolders(split)] if split_layout else top
    if not any(p.name in classes for p in candidates):
        return None
    unknown = sorted({p.name for p in candidates if p.name not in classes})
    if unknown:
        raise UserError(
            f"inputs={folder} has class folders, but {', '.join(unknown)} "
            f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of the checkpoint "
            f"({', '.join(classes)}); rename or remove {'it' if len(unknown) == 1 else 'them'}"
        )
    return {p: classes.index(p.name) for p in candidates}


def true_labels(files: list[Path], folder: Path, classes: list[str]) -> list[int] | None:
    """Each image's class from the class folder it lies in; None when the folder is not labelled."""
    folders = class_folders(folder, classes)
    if folders is None:
        if _subfolders(folder):
            log.info("no sub-folder of %s is named after a class of the checkpoint: its images are unlabelled", folder)
        return None
    labels = [next((folders[parent] for parent in path.parents if parent in folders), None) for path in files]
    outside = [path for path, label in zip(files, labels) if label is None]
    if outside:
        raise UserError(
            f"inputs={folder} has class folders, but not every image is in one ({len(outside)} outside, such as "
            f"{outside[0]}); move them into their class folder, or predict on them separately"
        )
    return labels


# --- the model ---------------------------------------------------------------------------------------


def read_images(paths: list[Path], trained: TrainedModel) -> list[torch.Tensor | None]:
    """Each file decoded and resized as the run's image folder was, to the model's input shape (None: unreadable)."""
    channels, height, width = trained.input_shape
    decoded = decode_images(paths, channels, DEFAULT_MAX_PIXELS)
    return [resize_image(image, (height, width)) if image is not None else None for image in decoded]


@torch.no_grad()
def classify(
    trained: TrainedModel, files: list[Path], labels: list[int] | None, batch_size: int, top_k: int
) -> Predictions:
    """Decode and resize a batch of files at a time (so memory holds one batch), forward, keep the top k."""
    channels = trained.input_shape[0]
    if channels not in (1, 3):
        raise UserError(f"{trained.path} takes {channels}-channel inputs; image files give 1 (grey) or 3 (RGB)")
    k = min(top_k, len(trained.classes))
    kept, probs, classes = [], [], []
    for start in range(0, len(files), batch_size):
        chunk = range(start, min(start + batch_size, len(files)))
        images = read_images([files[i] for i in chunk], trained)
        readable = [(i, image) for i, image in zip(chunk, images) if image is not None]
        if not readable:
            continue
        batch = torch.stack([image for _, image in readable]).to(trained.device)
        with autocast(trained.device, trained.amp_dtype):
            logits = trained.model(trained.normalize(batch)).float()
        top = logits.softmax(dim=1).topk(k, dim=1)
        kept += [i for i, _ in readable]
        probs.append(top.values.cpu())
        classes.append(top.indices.cpu())
    return Predictions(
        [files[i] for i in kept],
        torch.cat(probs) if probs else torch.empty(0, k),
        torch.cat(classes) if classes else torch.empty(0, k, dtype=torch.int64),
        torch.tensor([labels[i] for i in kept], dtype=torch.int64) if labels is not None else None,
        len(files) - len(kept),
    )


# --- what is written and shown ----------------------------------------------------------------------


def csv_columns(k: int, labelled: bool) -> list[str]:
    """path, label (labelled folders), predicted, probability, then top1_class, top1_prob ... topK_prob."""
    ranks = [f"top{rank}_{what}" for rank in range(1, k + 1) for what in ("class", "prob")]
    return ["path", *(["label"] if labelled else []), "predicted", "probability", *ranks]


def write_csv(predictions: Predictions, classes: list[str], path: Path) -> None:
    """One row per image, written in one step: a reader never sees half a file."""
    labelled = predictions.labels is not None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(predictions.top_classes.shape[1], labelled))
    for row, image in enumerate(predictions.paths):
        probs, indices = predictions.top_probs[row].tolist(), predictions.top_classes[row].tolist()
        ranks = [cell for index, prob in zip(indices, probs) for cell in (classes[index], f"{prob:.6f}")]
        label = [classes[int(predictions.labels[row])]] if labelled else []
        writer.writerow([str(image), *label, classes[indices[0]], f"{probs[0]:.6f}", *ranks])
    atomic_bytes_write(buffer.getvalue().encode(), path)


def shorten(path: Path, root: Path | None) -> str:
    """The path below the inputs folder, cut from the left to fit the table (the file name matters most)."""
    text = str(path.relative_to(root)) if root is not None else str(path)
    return text if len(text) <= PATH_WIDTH else "…" + text[-(PATH_WIDTH - 1) :]


def show_predictions(predictions: Predictions, classes: list[str], root: Path | None, csv_path: Path) -> None:
    """The first TABLE_ROWS predictions as a table: a terminal shows a sample, the CSV holds them all."""
    labelled = predictions.labels is not None
    columns = ["path", *(["label"] if labelled else []), "predicted", "prob", f"top {predictions.top_classes.shape[1]}"]
    rows = []
    for row, image in enumerate(predictions.paths[:TABLE_ROWS]):
        probs, indices = predictions.top_probs[row].tolist(), predictions.top_classes[row].tolist()
        label = [classes[int(predictions.labels[row])]] if labelled else []
        ranks = " ".join(f"{classes[index]}:{prob:.2f}" for index, prob in zip(indices, probs))
        rows.append([shorten(image, root), *label, classes[indices[0]], f"{probs[0]:.3f}", ranks])
    print_predictions(columns, rows, len(predictions.paths) - len(rows), str(csv_path))


def score(predicted: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy and per-class precision, recall and F1 of a labelled folder; printed and returned for predict.json."""
    confusion = confusion_matrix(predicted, labels, len(classes))
    metrics = precision_recall_f1(confusion)
    support = confusion.sum(1).tolist()
    accuracy = (predicted == labels).double().mean().item()
    print_class_metrics(f"accuracy {accuracy:.4f} on {len(labels):,} labelled images", classes, metrics, support)
    per_class = {
        name: {"images": support[i], **{key: values[i] for key, values in metrics.items()}}
        for i, name in enumerate(classes)
    }
    return {"accuracy": accuracy, "per_class": per_class}


def draw_mistakes(
    predictions: Predictions, labels: torch.Tensor, trained: TrainedModel, gallery: int, path: Path
) -> bool:
    """misclassified.png: the `gallery` most confidently wrong images, decoded again (only those are kept in memory
    meanwhile); False when there is nothing to draw."""
    confidence, predicted = predictions.top_probs[:, 0], predictions.top_classes[:, 0]
    wrong = (predicted != labels).nonzero().flatten()
    if len(wrong) == 0 or gallery == 0:
        return False
    chosen = wrong[confidence[wrong].argsort(descending=True)[:gallery]].tolist()
    images = read_images([predictions.paths[i] for i in chosen], trained)
    names = trained.classes
    mistakes = [
        (image, names[int(labels[i])], names[int(predicted[i])], float(confidence[i]))
        for i, image in zip(chosen, images)
        if image is not None
    ]
    if mistakes:
        save_misclassified(mistakes, f"{len(mistakes)} most confident of {len(wrong)} misclassified images", path)
    return bool(mistakes)
