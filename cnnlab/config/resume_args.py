"""Commands that start from an earlier run's settings put that run's overrides before the new command line.

    cnnlab train resume=<run>           continue a run with the overrides it was started with
    cnnlab train from_sweep=<sweep>     train the best trial of a sweep again (or from_sweep=<sweep>/<trial>)

A user types only the new part (`epochs=30`); a new value for the same key replaces the saved one.
"""

from pathlib import Path

import yaml

from cnnlab.config.resolvers import run_dir_of
from cnnlab.errors import UserError

SWEEP_ONLY = ("sweeper", "pruner", "launcher")  # groups that mean nothing to a single run


def override_key(override: str) -> str:
    """The config key an override sets: `+model.width=8` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def _value_of(args: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")), None)


def saved_overrides(run_dir: Path) -> list[str]:
    """The overrides a run or trial was started with ([] when its snapshot is missing or damaged)."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    try:
        previous = yaml.safe_load(saved.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []  # on resume, the checkpoint's config check still guards against a mismatch
    return [o for o in previous if isinstance(o, str)] if isinstance(previous, list) else []


def _check_reusable(previous: list[str], run_dir: Path) -> None:
    """A run folder may come from someone else: re-apply its settings, never the code or Hydra setup it names."""
    for override in previous:
        key = override_key(override)
        if key == "hydra" or key.startswith(("hydra.", "hydra/")) or "_target_" in key:
            raise UserError(
                f"{run_dir}/.hydra/overrides.yaml sets {override!r}; a saved run may not choose code or Hydra's own "
                "settings: if you trust it, pass that override on the command line yourself"
            )


def _prepend(args: list[str], previous: list[str], drop: tuple[str, ...]) -> list[str]:
    given = {override_key(a) for a in args if "=" in a}
    return [o for o in previous if override_key(o) not in given and override_key(o) not in drop] + args


def with_run_overrides(args: list[str]) -> list[str]:
    """Prepend the resumed run's own overrides (those the new command line does not set again)."""
    resume = _value_of(args, "resume")
    if not resume:
        return args
    run_dir = Path(run_dir_of(resume))
    previous = saved_overrides(run_dir)
    _check_reusable(previous, run_dir)
    return _prepend(args, previous, ("resume",))


def with_sweep_overrides(args: list[str]) -> list[str]:
    """Prepend the overrides of a sweep's best trial (or of the trial folder given)."""
    target = _value_of(args, "from_sweep")
    if not target:
        return args
    from cnnlab.sweeps.results import best_trial_dir

    trial_dir = best_trial_dir(target)
    previous = saved_overrides(trial_dir)
    _check_reusable(previous, trial_dir)
    return _prepend(args, previous, ("from_sweep", "resume", *SWEEP_ONLY))
