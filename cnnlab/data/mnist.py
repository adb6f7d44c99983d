"""MNIST and Fashion-MNIST through torchvision (idx files under <root>/<variant>/raw, downloaded when missing)."""

import contextlib
import io
from pathlib import Path
from urllib.error import URLError

from cnnlab.data.types import ImageSet, SourceData
from cnnlab.errors import UserError

VARIANTS = ("MNIST", "FashionMNIST")  # torchvision's class names, imported only when used (1.7 s)


def _split(cls: type, root: str, train: bool, download: bool) -> ImageSet:
    # torchvision prints each failed mirror to stdout; keep that out of the user's terminal.
    with contextlib.redirect_stdout(io.StringIO()):
        ds = cls(root=root, train=train, download=download)
    return ImageSet(ds.data.unsqueeze(1).contiguous(), ds.targets.long())


def load_mnist(variant: str, root: str, download: bool = True) -> SourceData:
    """Load the train and test splits of MNIST or FashionMNIST as uint8 tensors of shape (N, 1, 28, 28)."""
    if variant not in VARIANTS:
        raise UserError(f"dataset.source.variant={variant!r} is unknown; choose one of {sorted(VARIANTS)}")
    from torchvision import datasets

    cls = getattr(datasets, variant)
    root = str(Path(root).expanduser())
    try:
        train = _split(cls, root, True, download)
        test = _split(cls, root, False, download)
    except (RuntimeError, URLError, OSError) as e:
        raise UserError(
            f"{variant}: no data in {Path(root) / variant / 'raw'} and "
            f"{'the download failed' if download else 'download is off'} ({str(e).splitlines()[0]}); "
            f"put the four idx files there, set dataset.root=<folder with {variant}/raw>, or use dataset=synthetic"
        ) from e
    except (AssertionError, ValueError) as e:  # torchvision's idx reader asserts on a wrong magic number
        raise UserError(
            f"{variant}: the idx files in {Path(root) / variant / 'raw'} are corrupt or not {variant} files; "
            "delete them to download again, or replace them with the official ones"
        ) from e
    return SourceData(train, test, [str(c) for c in cls.classes])
