"""Find the checkpoint file a user means; free of torch, so a wrong path fails before anything heavy loads."""

from pathlib import Path

from cnnlab.errors import UserError


def find_checkpoint(target: str | Path, name: str = "last.pt") -> Path:
    """A run folder (its checkpoints/<name>), a checkpoints folder, or a .pt file -> the checkpoint file."""
    target = Path(target).expanduser()
    if target.is_file():
        return target
    for candidate in (target / "checkpoints" / name, target / name):
        if candidate.is_file():
            return candidate
    if not target.exists():
        raise UserError(f"{target} does not exist; pass a run folder (outputs/runs/...) or a checkpoint file")
    raise UserError(f"no checkpoint in {target} (looked for checkpoints/{name}); the run saved none yet, start it again")
