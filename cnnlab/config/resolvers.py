"""OmegaConf resolvers the configs use. Importing this module registers them (idempotently)."""

import secrets

from omegaconf import OmegaConf


def _unique_id() -> str:
    """A short random token, cached per config so every read (and every job of a sweep) agrees."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("cnnlab_uid"):
        OmegaConf.register_new_resolver("cnnlab_uid", _unique_id, use_cache=True)


register_resolvers()
