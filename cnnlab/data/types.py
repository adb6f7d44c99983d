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

    def keep_classes(self, names: list[str]) -> "SourceData":
        """Only the images of `names` (in the data set's class order), relabelled 0..len(names)-1."""
        index = torch.tensor([self.classes.index(name) for name in sorted(names, key=self.classes.index)])
        relabel = torch.full((len(self.classes),), -1, dtype=torch.int64)
        relabel[index] = torch.arange(len(index))

        def kept(data: ImageSet) -> ImageSet:
            mask = relabel.to(data.labels.device)[data.labels] >= 0
            return ImageSet(data.images[mask], relabel.to(data.labels.device)[data.labels[mask]])

        return SourceData(
            kept(self.train),
            kept(self.test) if self.test is not None else None,
            [self.classes[i] for i in index.tolist()],
        )
