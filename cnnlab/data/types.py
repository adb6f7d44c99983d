"""Plain containers passed between data sources, the splitter and the loaders."""

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    """Decoded images as uint8 NCHW plus int64 labels.

    A subset selects `rows` of the same `images` instead of copying pixels, so splitting a large set
    costs no memory. `mapped` images are a memory-mapped file: they stay on the host and each batch reads
    only its own rows.
    """

    images: torch.Tensor
    labels: torch.Tensor
    rows: torch.Tensor | None = None
    mapped: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The images at positions `index`, on the device where the images are stored."""
        index = index.to(self.images.device)
        return self.images[index if self.rows is None else self.rows[index]]

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Every image once, `size` at a time (in file order, which is what reading a mapped file wants)."""
        if self.rows is None:
            yield from self.images.split(size)
            return
        ordered = self.rows.sort().values
        for start in range(0, len(ordered), size):
            yield self.images[ordered[start : start + size]]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        rows = index.to(self.images.device)
        return ImageSet(
            self.images,
            self.labels[index.to(self.labels.device)],
            rows if self.rows is None else self.rows[rows],
            self.mapped,
        )

    def shard(self, rank: int, count: int, equal: bool = False) -> "ImageSet":
        """Every `count`-th image from position `rank` on: one of `count` disjoint shards that together hold every
        image. `equal` cuts each shard to the smallest one's size, so that every rank takes as many steps. In-memory
        images are copied out, so a rank keeps only its own shard once the whole set is released."""
        positions = torch.arange(rank, len(self), count)
        part = self.subset(positions[: len(self) // count] if equal else positions)
        if self.mapped:
            return part
        return ImageSet(part.gather(torch.arange(len(part))), part.labels.clone())

    def to(self, device: torch.device, images_too: bool = True) -> "ImageSet":
        """Labels onto `device`, and the images too unless they are mapped or `images_too` is False (each batch
        is then copied to the device on its own)."""
        if self.mapped or not images_too:
            return ImageSet(self.images, self.labels.to(device), self.rows, self.mapped)
        rows = self.rows.to(device) if self.rows is not None else None
        return ImageSet(self.images.to(device), self.labels.to(device), rows, self.mapped)


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
            new_labels = relabel.to(data.labels.device)[data.labels]
            subset = data.subset(torch.nonzero(new_labels >= 0).flatten())
            return ImageSet(subset.images, new_labels[new_labels >= 0], subset.rows, subset.mapped)

        return SourceData(
            kept(self.train),
            kept(self.test) if self.test is not None else None,
            [self.classes[i] for i in index.tolist()],
        )
