"""OmegaConf resolvers the configs use. Importing this module registers them (idempotently)."""

import secrets
from pathlib import Path

from omegaconf import OmegaConf


def _unique_id() -> str:
    """A short random token, cached per config so every read (and every job of a sweep) agrees."""
    return secrets.token_hex(3)


def run_dir_of(target: str) -> str:
    """The run folder of a run folder or of one of its checkpoint files."""
    path = Path(str(target)).expanduser()
    if path.suffix == ".pt" or path.is_file():
        path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return str(path)


def _run_dir(resume: str | None, fresh: str) -> str:
    """The folder of the run being resumed, else a fresh one."""
    return fresh if resume in (None, "") else run_dir_of(resume)


def _snapshot_dir(resume: str | None) -> str:
    return ".hydra" if resume in (None, "") else ".hydra/resumed"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cnnlab_uid"):
        OmegaConf.register_new_resolver("cnnlab_uid", _unique_id, use_cache=True)
    if not OmegaConf.has_resolver("cnnlab_run_dir"):
        OmegaConf.register_new_resolver("cnnlab_run_dir", _run_dir)
    if not OmegaConf.has_resolver("cnnlab_snapshot_dir"):
        OmegaConf.register_new_resolver("cnnlab_snapshot_dir", _snapshot_dir)


register_resolvers()
