"""PNG figures of a run (curves, confusion matrix), of a data set (samples, class distribution) and of
predictions (the most confidently wrong images).

Figures are built as `Figure` objects on an Agg canvas instead of through pyplot, so nothing touches
matplotlib's global backend or figure registry (safe inside training and in tests), and every file is
written atomically, because a run can be killed while it saves one.
"""

import io
import math
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnnlab.atomic import atomic_bytes_write

DPI = 100
ANNOTATE_MAX_CLASSES = 20  # above this, count labels in the confusion matrix cells become unreadable
TILE_GAP = 2  # white pixels between sample images
GALLERY_COLUMNS = 8


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes; bbox_inches="tight" grows or trims the canvas to fit long class names instead of
    clipping them."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return buffer.getvalue()


def save_figure(figure: Figure, path: Path) -> None:
    """Render to PNG in memory, then replace `path` in one step: readers never see a half-written file."""
    atomic_bytes_write(figure_png(figure), path)


def curves_figure(history: list[dict[str, float]]) -> Figure:
    """Loss and accuracy per epoch, train against val, from metrics.json's history entries."""
    figure = _figure(10, 4)
    epochs = [entry["epoch"] for entry in history]
    for axes, metric, title in zip(figure.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        for split in ("train", "val"):
            key = f"{split}/{metric}"
            points = [(epoch, entry[key]) for epoch, entry in zip(epochs, history) if entry.get(key) is not None]
            if points:
                axes.plot(*zip(*points), marker="o", markersize=3, label=split)
        axes.set(title=title, xlabel="epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend()
    return figure


def save_curves(history: list[dict[str, float]], path: Path) -> None:
    save_figure(curves_figure(history), path)


def save_lr_find(lrs: list[float], losses: list[float], smoothed: list[float], suggestion: float, path: Path) -> None:
    """The range test's loss against the learning rate (log scale), with the suggested learning rate marked."""
    figure = _figure(7, 4.5)
    axes = figure.subplots()
    axes.plot(lrs, losses, color="lightgrey", linewidth=0.8, label="loss per step")
    axes.plot(lrs, smoothed, label="smoothed loss")
    axes.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    axes.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="learning-rate range test")
    if smoothed:  # cut the blow-up at the end, which would flatten the rest of the curve
        top, bottom = min(max(smoothed), 2 * smoothed[0]), min(min(smoothed), min(losses))
        margin = 0.05 * max(top - bottom, 1e-6)
        axes.set_ylim(bottom - margin, top + margin)
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def confusion_figure(matrix: torch.Tensor, classes: list[str]) -> Figure:
    """Rows: true class, columns: predicted; colour is the fraction of the row, so rare classes show too."""
    counts = matrix.detach().cpu().to(torch.int64)
    fractions = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    size = max(5.0, 0.45 * len(classes) + 2.5)
    figure = _figure(size + 1, size)
    axes = figure.subplots()
    image = axes.imshow(fractions.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="fraction of the true class", shrink=0.8)
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, classes)
    axes.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    if len(classes) <= ANNOTATE_MAX_CLASSES:
        for row, col in torch.cartesian_prod(torch.arange(len(classes)), torch.arange(len(classes))).tolist():
            colour = "white" if fractions[row, col] > 0.5 else "black"
            axes.text(col, row, str(int(counts[row, col])), ha="center", va="center", color=colour, fontsize=8)
    return figure


def _mosaic(samples: list[torch.Tensor], columns: int) -> torch.Tensor:
    """One HWC image with a row of tiles per class (white gaps), so the grid is a single fast imshow."""
    channels, height, width = samples[0].shape[1:]
    shown = 3 if channels >= 3 else 1  # the first three channels as RGB, else the first as grey
    cell_h, cell_w = height + TILE_GAP, width + TILE_GAP
    mosaic = torch.full((len(samples) * cell_h + TILE_GAP, columns * cell_w + TILE_GAP, shown), 255, dtype=torch.uint8)
    for row, images in enumerate(samples):
        for col, image in enumerate(images[:columns].cpu()):
            top, left = TILE_GAP + row * cell_h, TILE_GAP + col * cell_w
            mosaic[top : top + height, left : left + width] = image[:shown].permute(1, 2, 0)
    return mosaic


def _show_pixels(axes: Axes, pixels: torch.Tensor) -> None:
    """uint8 HWC pixels, grey (one channel) or RGB, at their true values: one pixel, one square."""
    grey = pixels.shape[2] == 1
    axes.imshow(
        (pixels[..., 0] if grey else pixels).numpy(),
        cmap="gray" if grey else None,
        vmin=0,
        vmax=255,
        interpolation="nearest",
    )


def samples_figure(samples: list[torch.Tensor], classes: list[str], columns: int) -> Figure:
    """A row of up to `columns` images per class (uint8 NCHW tensors), labelled with the class name."""
    mosaic = _mosaic(samples, columns)
    label_width = 0.09 * max(len(name) for name in classes) + 0.3
    figure = _figure(0.75 * columns + label_width, 0.75 * len(classes) + 0.4)
    axes = figure.subplots()
    _show_pixels(axes, mosaic)
    cell = (mosaic.shape[0] - TILE_GAP) / len(classes)
    axes.set_yticks([TILE_GAP / 2 + cell * (row + 0.5) - 0.5 for row in range(len(classes))], classes)
    axes.set_xticks([])
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    full = all(len(images) >= columns for images in samples)
    axes.set_title(f"{'' if full else 'up to '}{columns} training images per class")
    return figure


def save_samples(samples: list[torch.Tensor], classes: list[str], columns: int, path: Path) -> None:
    save_figure(samples_figure(samples, classes, columns), path)


def class_distribution_figure(counts: dict[str, list[int]], classes: list[str]) -> Figure:
    """Images per class, one bar per split side by side (e.g. {"train": [...], "test": [...]})."""
    figure = _figure(max(6.0, 0.35 * len(classes) * max(len(counts), 1) + 1.5), 4.5)
    axes = figure.subplots()
    bar_width = 0.8 / max(len(counts), 1)
    for index, (split, values) in enumerate(counts.items()):
        positions = [c + (index - (len(counts) - 1) / 2) * bar_width for c in range(len(classes))]
        axes.bar(positions, values, width=bar_width, label=f"{split} ({sum(values):,})")
    axes.set_xticks(
        range(len(classes)),
        classes,
        rotation=45 if len(classes) > 5 else 0,
        ha="right" if len(classes) > 5 else "center",
    )
    axes.set(ylabel="images", title="class distribution")
    axes.grid(axis="y", alpha=0.3)
    axes.margins(y=0.15)  # headroom for the legend: balanced classes fill the plot up to the top
    axes.legend(loc="upper right", ncols=len(counts))
    return figure


def save_class_distribution(counts: dict[str, list[int]], classes: list[str], path: Path) -> None:
    save_figure(class_distribution_figure(counts, classes), path)


def misclassified_figure(mistakes: list[tuple[torch.Tensor, str, str, float]], title: str) -> Figure:
    """One tile per (uint8 CHW image, true class, predicted class, probability), titled "true -> predicted (prob)",
    in the order given (the caller puts the most confident mistakes first)."""
    columns = min(GALLERY_COLUMNS, len(mistakes))
    rows = math.ceil(len(mistakes) / columns)
    figure = _figure(1.7 * columns, 1.9 * rows)
    for axes, (image, true, predicted, prob) in zip(figure.subplots(rows, columns, squeeze=False).flat, mistakes):
        pixels = image.detach().cpu()
        _show_pixels(axes, pixels[: 3 if pixels.shape[0] >= 3 else 1].permute(1, 2, 0))
        axes.set_title(f"{true} -> {predicted} ({prob:.2f})", fontsize=7)
    for axes in figure.axes:
        axes.set_axis_off()
    figure.suptitle(title, fontsize=9)
    return figure


def save_misclassified(mistakes: list[tuple[torch.Tensor, str, str, float]], title: str, path: Path) -> None:
    save_figure(misclassified_figure(mistakes, title), path)
