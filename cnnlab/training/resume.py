"""Checks that a resumed run continues what its checkpoint was trained with."""

from typing import Any

from cnnlab.errors import UserError

# Keys that may differ on resume: where the run executes, where data lives, how it is shown - and
# `epochs`, which may be raised to train longer (the schedule is stretched to the new length).
MAY_CHANGE = ("epochs", "resume", "device", "compile", "trainer.log_every", "trainer.eval_batch_size", "trainer.log_graph")
MAY_CHANGE_SUFFIXES = ("root", "cache_dir", "download", "url", "md5")
# Settings added after checkpoints already existed: a checkpoint without one was trained as with this value
ADDED_LATER = {"trainer.tta": False, "model.downsample": "stride"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: saved -> current' for every setting that differs and may not change on resume."""
    old, new = flatten(saved), flatten(current)
    old = {**{k: v for k, v in ADDED_LATER.items() if k in new}, **old}
    changes = []
    for key in sorted(set(old) | set(new)):
        if key in MAY_CHANGE or key.rsplit(".", 1)[-1] in MAY_CHANGE_SUFFIXES:
            continue
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changes.append(f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}")
    return changes


def check_resumable(saved: dict[str, Any], current: dict[str, Any], checkpoint: str) -> None:
    changes = config_changes(saved, current)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise UserError(
            f"cannot resume {checkpoint} with different settings ({shown}); drop those overrides "
            "(only epochs may be raised), or start a new run without resume="
        )
