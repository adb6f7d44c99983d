"""OmegaConf resolvers the configs use. Importing this module registers them (idempotently)."""

import secrets

from omegaconf import OmegaConf

from cnnlab.run_folder import RESUMED_SNAPSHOT_DIR, SNAPSHOT_DIR, run_dir_of


def _unique_id() -> str:
    """A short random token, cached per config so every read (and every job of a sweep) agrees."""
    return secrets.token_hex(3)


def _run_dir(resume: str | None, fresh: str) -> str:
    """The folder of the run being resumed, else a fresh one."""
    return fresh if resume in (None, "") else str(run_dir_of(resume))


def _snapshot_dir(resume: str | None) -> str:
    return SNAPSHOT_DIR if resume in (None, "") else RESUMED_SNAPSHOT_DIR


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cnnlab_uid"):
        OmegaConf.register_new_resolver("cnnlab_uid", _unique_id, use_cache=True)
    if not OmegaConf.has_resolver("cnnlab_run_dir"):
        OmegaConf.register_new_resolver("cnnlab_run_dir", _run_dir)
    if not OmegaConf.has_resolver("cnnlab_snapshot_dir"):
        OmegaConf.register_new_resolver("cnnlab_snapshot_dir", _snapshot_dir)


register_resolvers()
