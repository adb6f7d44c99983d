"""checkpoints/last.pt every epoch and checkpoints/best.pt on a new best validation accuracy."""

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.checkpoints.atomic import atomic_torch_save

FORMAT_VERSION = 1


def rng_states() -> dict[str, Any]:
    """Every global RNG a run draws from, in forms that `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


class CheckpointStore:
    """Writes trainer state plus RNG states and the resolved config, atomically, under `folder`."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.config = config

    @property
    def last(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def save(self, trainer_state: dict[str, Any], best: bool) -> None:
        payload = {"format": FORMAT_VERSION, **trainer_state, "rng": rng_states(), "config": self.config}
        atomic_torch_save(payload, self.last)
        if best:
            atomic_torch_save(payload, self.best)
