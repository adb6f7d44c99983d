"""What cnnlab will build from a config stored in a checkpoint, which may come from anyone.

weights_only=True keeps pickled code out of a checkpoint, but its stored config is read too: a
`_target_` names a callable that Hydra imports and calls, and an interpolation can splice such a node
in. cnnlab writes checkpoint configs resolved and builds models only from its own packaged options,
so anything else is refused unless the user vouches for the file.
"""

from collections.abc import Iterator
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import UserError


def _walk(tree: Any) -> Iterator[tuple[str | None, Any]]:
    """(key, value) of every entry in nested dicts and lists (key None for list items)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield (key if isinstance(tree, dict) else None), value
        yield from _walk(value)


@cache
def packaged_targets() -> frozenset[str]:
    """The `_target_`s of cnnlab's own model and dataset options (conf/model, conf/dataset)."""
    found = set()
    for group in ("model", "dataset"):
        for entry in files("cnnlab.conf").joinpath(group).iterdir():
            if entry.name.endswith(".yaml"):
                found.update(str(v) for k, v in _walk(yaml.safe_load(entry.read_text())) if k == "_target_")
    return frozenset(found)


def check_config_code(config: dict[str, Any], path: Path, trust_code: bool) -> None:
    """Raise UserError unless the stored model and dataset configs build only cnnlab's own classes."""
    spliced = next((v for _, v in _walk(config) if isinstance(v, str) and "${" in v), None)
    if spliced is not None:
        raise UserError(
            f"checkpoint {path} holds an interpolation ({spliced[:60]!r}) that cnnlab never writes; "
            "it was not used: only evaluate checkpoints written by cnnlab"
        )
    sections = [config.get("model"), config.get("dataset")]
    foreign = [
        str(v)
        for section in sections
        for k, v in _walk(section)
        if k == "_target_" and str(v) not in packaged_targets()
    ]
    if foreign and not trust_code:
        raise UserError(
            f"checkpoint {path} asks to build {foreign[0]!r}, which is not one of cnnlab's models or datasets; if you "
            "wrote that class and trust this file, add trust_code=true"
        )
