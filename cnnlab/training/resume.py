"""Resuming a run: everything it needs, loaded and checked once, then handed to the trainer and the sinks.

    cnnlab train resume=<run folder or checkpoint>

Before this runs, the CLI has put the run's saved overrides in front of the new ones
(cnnlab.cli_overrides), Hydra has pointed the job at the run's own folder (cnnlab.config.resolvers),
and validation has checked the checkpoint exists and no other process writes the folder.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.checkpoints.store import load_checkpoint, restore_rng_states
from cnnlab.config.choices import tta_level
from cnnlab.errors import UserError
from cnnlab.run_folder import find_checkpoint, read_metrics, run_dir_of

# Keys that may differ on resume: where the run executes (and on how many processes), where data lives, how it is
# shown - and
# `epochs`, which may be raised to train longer (the schedule is stretched to the new length).
MAY_CHANGE = (
    "epochs",
    "trainer.devices",
    "trainer.dist_timeout",
    "resume",
    "device",
    "compile",
    "trainer.log_every",
    "trainer.eval_batch_size",
    "trainer.log_graph",
)
MAY_CHANGE_SUFFIXES = ("root", "cache_dir", "download", "url", "md5")
# Settings added after checkpoints already existed: a checkpoint without one was trained as with this value
ADDED_LATER = {
    "trainer.tta": False,
    "trainer.tta_every_epoch": True,
    "model.downsample": "stride",
    "model.stem": "conv",
    "model.init": "default",
    "model.bn_momentum": 0.1,
    "model.bn_frozen_scale": False,
    "trainer.bias_lr_factor": 1.0,
    "trainer.finetune": "full",
    "trainer.head_epochs": 1,
    "trainer.backbone_lr_factor": 1.0,
    "trainer.weight_averaging": "none",
    "trainer.ema_decay": 0.95,
    "trainer.ema_every": 5,
    "trainer.lookahead_steps": 5,
    "trainer.lookahead_alpha": 0.5,
    "init_from": None,
    "dataset.input_size": None,
    "dataset.normalization": "data",
    "dataset.classes": None,
    "dataset.augment.flip_mode": "random",
    "dataset.augment.pad_mode": "zeros",
    "trainer.sync_batchnorm": False,
    "model.pool_before_norm": False,
    "model.head_pool": "avg",
}
# Keys whose older spellings mean the same setting: compared in the one spelling these functions return
SPELLINGS = {"trainer.tta": tta_level}  # true/false were flip/none before TTA had levels


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def respelled(flat: dict[str, Any]) -> dict[str, Any]:
    """A flattened config with every value in SPELLINGS written the one way, so old and new spellings compare equal."""
    return {key: SPELLINGS[key](value) if key in SPELLINGS else value for key, value in flat.items()}


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: saved -> current' for every setting that differs and may not change on resume."""
    old, new = flatten(saved), flatten(current)
    old = {**{k: v for k, v in ADDED_LATER.items() if k in new}, **old}
    old, new = respelled(old), respelled(new)
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


@dataclass
class Resume:
    """A run's state at its last checkpoint: the checkpoint itself and the metrics history that led to it."""

    path: Path  # the checkpoint file
    checkpoint: dict[str, Any]
    history: list[dict[str, Any]]  # metrics.json's epochs up to the checkpoint (later ones were never saved)
    started_at: float | None  # when the run first started, so elapsed time keeps counting from there

    @classmethod
    def load(cls, target: str | Path, config: dict[str, Any]) -> "Resume":
        """Load the checkpoint of `target` (a run folder or .pt file) and check `config` may continue it."""
        path = find_checkpoint(target)
        checkpoint = load_checkpoint(path)
        check_resumable(checkpoint["config"], config, str(path))
        previous = read_metrics(run_dir_of(path)) or {}
        history = [h for h in previous.get("history", []) if h.get("epoch", 0) <= checkpoint["epoch"]]
        return cls(path, checkpoint, history, previous.get("started_at"))

    @property
    def epoch(self) -> int:
        """Epochs the checkpoint has completed."""
        return int(self.checkpoint["epoch"])

    @property
    def purge_step(self) -> int:
        """The first TensorBoard step to drop: whatever a killed process logged after its checkpoint."""
        return self.epoch + 1

    def planned_epochs(self, requested: int, time_budget: bool) -> int:
        """The schedule's length: the checkpoint's plan, which `epochs` can raise (not under a time budget)."""
        planned = int(self.checkpoint["planned_epochs"])
        return planned if time_budget else max(int(requested), planned)

    def restore(self, trainer: Any) -> None:
        """Put the trainer (model, optimizer, schedule, position) and every global RNG where the checkpoint was; on a
        data-parallel run, each rank's own RNG states (when it ran on as many processes)."""
        trainer.load_state_dict(self.checkpoint)
        per_rank = self.checkpoint.get("rank_states") or []
        ranks = trainer.ranks
        restore_rng_states(per_rank[ranks.rank]["rng"] if len(per_rank) == ranks.world_size else self.checkpoint["rng"])
