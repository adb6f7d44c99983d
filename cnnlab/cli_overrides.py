"""Commands that start from an earlier run's settings put that run's overrides before the new command line.

    cnnlab train resume=<run>           continue a run with the overrides it was started with
    cnnlab train from_sweep=<sweep>     train the best trial of a sweep again (or from_sweep=<sweep>/<trial>)

A user types only the new part (`epochs=30`); a new value for the same key replaces the saved one.
"""

from cnnlab.run_folder import SWEEP_ONLY, override_key, reusable_overrides, run_dir_of


def _value_of(args: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")), None)


def _prepend(args: list[str], previous: list[str], drop: tuple[str, ...]) -> list[str]:
    given = {override_key(a) for a in args if "=" in a}
    return [o for o in previous if override_key(o) not in given and override_key(o) not in drop] + args


def with_run_overrides(args: list[str]) -> list[str]:
    """Prepend the resumed run's own overrides (those the new command line does not set again)."""
    resume = _value_of(args, "resume")
    if not resume:
        return args
    return _prepend(args, reusable_overrides(run_dir_of(resume)), ("resume",))


def with_sweep_overrides(args: list[str]) -> list[str]:
    """Prepend the overrides of a sweep's best trial (or of the trial folder given)."""
    target = _value_of(args, "from_sweep")
    if not target:
        return args
    from cnnlab.sweeps.results import best_trial_dir  # reads the sweep folder; only needed with from_sweep=

    return _prepend(args, reusable_overrides(best_trial_dir(target)), ("from_sweep", "resume", *SWEEP_ONLY))


def with_saved_overrides(args: list[str]) -> list[str]:
    """`cnnlab train` arguments with the saved overrides that resume= and from_sweep= stand for."""
    return with_sweep_overrides(with_run_overrides(args))
