"""checkpoints/last.pt (every epoch, and on interrupt) and checkpoints/best.pt (on a new best validation accuracy).

Files are written atomically and read with `torch.load(weights_only=True)`, so a checkpoint can hold
tensors, numbers, strings and containers but never code.
"""

import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.atomic import atomic_torch_save
from cnnlab.errors import UserError
from cnnlab.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT

FORMAT_VERSION = 1


def rng_states() -> dict[str, Any]:
    """Every global RNG a run draws from, in forms that `torch.load(weights_only=True)` accepts."""
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": list(state),
        "python_version": version,
        "python_gauss": gauss,
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put every global RNG back where rng_states() found it."""
    random.setstate((states["python_version"], tuple(states["python"]), states["python_gauss"]))
    has_gauss, gauss = states["numpy_gauss"]
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_pos"], has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a cnnlab checkpoint onto the CPU; anything else (missing, corrupt, foreign, code) is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a run folder or a .pt file under its checkpoints/")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load fails in many ways on foreign bytes
        globals_named = [
            line.strip() for line in str(e).splitlines() if "global" in line.lower() and "weights_only" not in line
        ]
        if isinstance(e, pickle.UnpicklingError) and globals_named:
            raise UserError(
                f"checkpoint {path} was refused: it asks to import code ({globals_named[0][:120]}); "
                "only load checkpoints written by cnnlab"
            ) from e
        raise UserError(
            f"checkpoint {path} is unreadable (corrupt, truncated or not a checkpoint); "
            "use checkpoints/best.pt or another run"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION or "model" not in payload:
        raise UserError(
            f"{path} is not a cnnlab checkpoint (format {FORMAT_VERSION}); pass one from a cnnlab run folder"
        )
    return payload


class CheckpointStore:
    """Writes trainer state plus RNG states and the resolved config, atomically, under `folder`."""

    def __init__(self, folder: Path, config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.config = config
        self.extra = extra or {}
        for leftover in folder.glob(".*.pt.*.tmp"):  # a write that SIGKILL cut short; the run holds the folder's lock
            leftover.unlink(missing_ok=True)

    @property
    def last(self) -> Path:
        return self.folder / LAST_CHECKPOINT

    @property
    def best(self) -> Path:
        return self.folder / BEST_CHECKPOINT

    def save(self, trainer_state: dict[str, Any], best: bool) -> None:
        payload = {"format": FORMAT_VERSION, **self.extra, **trainer_state, "rng": rng_states(), "config": self.config}
        for path in (self.last, self.best) if best else (self.last,):
            try:
                atomic_torch_save(payload, path)
            except OSError as e:
                raise UserError(
                    f"could not write {path} ({e.strerror or e}); the previous checkpoint is kept: free some disk "
                    f"space, then continue with cnnlab train resume={self.folder.parent}"
                ) from e
