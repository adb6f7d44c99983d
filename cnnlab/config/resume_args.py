"""`cnnlab train resume=<run>` continues with the overrides that run was started with.

The run's `.hydra/overrides.yaml` is put before the new command line, so a user types only
`resume=<run>` (plus `epochs=N` to train longer); a new value for the same key replaces the old one.
"""

from pathlib import Path

import yaml

from cnnlab.config.resolvers import run_dir_of


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def with_run_overrides(args: list[str]) -> list[str]:
    """Prepend the resumed run's own overrides (those the new command line does not set again)."""
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if not resume:
        return args
    saved = Path(run_dir_of(resume)) / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return args
    try:
        previous = yaml.safe_load(saved.read_text()) or []
    except yaml.YAMLError:
        return args  # the run's snapshot is damaged: the checkpoint's config check still guards the resume
    given = {_key(a) for a in args if "=" in a}
    return [o for o in previous if isinstance(o, str) and _key(o) not in given and _key(o) != "resume"] + args
