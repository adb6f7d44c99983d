"""A figure drawn at most once and shared by every sink that shows it.

Drawing the confusion matrix costs about half a second on a laptop core, more than everything else a sink does
with it; TensorBoard, the PNG file, W&B and MLflow each drawing their own copy made the end of every run, and
of every trial of a search, that much slower per logger.
"""

import io
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Picture:
    """Drawn on first use (a run whose sinks show no figure never imports matplotlib), then kept as PNG bytes."""

    def __init__(self, draw: Callable[[], "Figure"]) -> None:
        self._draw = draw

    @cached_property
    def png(self) -> bytes:
        from cnnlab.tracking.plots import figure_png

        return figure_png(self._draw())

    @cached_property
    def pixels(self) -> np.ndarray:
        """RGB (H, W, 3) uint8, for loggers that take arrays rather than files."""
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as image:
            return np.asarray(image.convert("RGB"))


def confusion_picture(report: dict[str, Any], classes: list[str]) -> Picture:
    """The confusion matrix of a classification report (`report["confusion"]`, rows true, columns predicted)."""

    def draw() -> "Figure":
        from cnnlab.tracking.plots import confusion_figure

        return confusion_figure(torch.tensor(report["confusion"]), classes)

    return Picture(draw)
