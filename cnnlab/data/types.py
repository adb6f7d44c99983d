"""Plain containers passed between data sources, the splitter and the loaders."""

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Decoded images as uint8 NCHW plus int64 labels, both on the same device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def to(self, device: torch.device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))


@dataclass
class SourceData:
    """What a data source returns: the training pool, the test split when the set has one, class names."""

    train: ImageSet
    test: ImageSet | None
    classes: list[str]
