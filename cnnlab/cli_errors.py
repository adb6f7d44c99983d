"""Turn the exceptions a user's mistake can raise into one line that says what is wrong and how to fix it."""

import difflib
import re
from importlib.resources import files

import yaml
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cnnlab.errors import UserErrorExit, find_user_error, install_extra


def _first_lines(text: str, count: int = 2) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:count])


def _unknown_key(exc: ConfigCompositionException, task: str) -> str | None:
    """'unknown key trainer.patiense (did you mean trainer.patience?)' for an override of a key that does not exist."""
    cause = exc.__cause__ or exc.__context__
    if not isinstance(cause, ConfigAttributeError | ConfigKeyError) or "not in struct" not in str(cause):
        return None
    full_key = str(cause.full_key)
    parent = cause.parent_node
    siblings = [str(k) for k in parent.keys()] if parent is not None and hasattr(parent, "keys") else []
    close = difflib.get_close_matches(str(cause.key), siblings, n=1)
    prefix = full_key.rsplit(".", 1)[0] + "." if "." in full_key else ""
    guess = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return (
        f"unknown key {full_key}{guess}; list the keys with cnnlab {task} --cfg job, "
        f"or add a new one with +{full_key}=..."
    )


SEARCH_SWEEPERS = "sweeper=random, sweeper=tpe, sweeper=gp or sweeper=nsga2"


def _search_sweeper_keys() -> set[str]:
    """The settings of cnnlab's search sweeper (conf/hydra/sweeper/cnnlab.yaml)."""
    text = files("cnnlab.conf").joinpath("hydra", "sweeper", "cnnlab.yaml").read_text()
    return {str(key) for key in (yaml.safe_load(text) or {})}


def _grid_sweeper_mistake(exc: BaseException) -> str | None:
    """A search setting given to the default grid sweeper: it lists values, it does not sample."""
    text = str(exc)
    if "BasicSweeper does not support sweep type" in text:
        return (
            "the grid sweeper (the default) runs listed values (lr=0.01,0.1); to sample interval(), range() or "
            f"tag() add {SEARCH_SWEEPERS}"
        )
    unknown = re.search(r"Could not override 'hydra\.sweeper\.(\w+)", text)
    if unknown and unknown.group(1) in _search_sweeper_keys():
        key = f"hydra.sweeper.{unknown.group(1)}"
        return f"{key} is a setting of the search sweepers, not of the grid sweeper: add {SEARCH_SWEEPERS}"
    return None


def describe(exc: BaseException, task: str = "train") -> str | None:
    """One line for a user mistake, or None when the exception is a bug that deserves its traceback."""
    if isinstance(exc, UserErrorExit):
        return str(exc.error)
    if grid := _grid_sweeper_mistake(exc):
        return grid
    user_error = find_user_error(exc)
    if user_error is not None:
        return str(user_error)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, option = exc.missing_cfg_file.rsplit("/", 1)
        if group == "hydra/launcher":  # cnnlab's launcher option exists, Hydra's plugin for it does not
            return f"Hydra's {option} launcher is not installed: {install_extra('cluster')}"
        options = ", ".join(exc.options or [])
        return f"unknown {group} '{option}'; choose one of: {options} (see cnnlab --help)"
    if isinstance(exc, ConfigCompositionException) and (unknown := _unknown_key(exc, task)):
        return unknown
    if isinstance(exc, OverrideParseException):
        return (
            f"cannot parse override '{exc.override}': {_first_lines(exc.message, 1)}; check its brackets and "
            "quotes, and quote it for the shell (for example 'lr=tag(log,interval(1e-4,1))')"
        )
    if isinstance(exc, InstantiationException):
        cause = exc.__cause__
        key = next(
            (line.split(":", 1)[1].strip() for line in str(exc).splitlines() if line.startswith("full_key:")), "config"
        )
        return f"cannot build {key}: {cause if cause is not None else _first_lines(str(exc))}"
    missing = re.search(r"Missing mandatory value: ([\w.]+)", str(exc))
    if isinstance(exc, OmegaConfBaseException) and missing:
        key = missing.group(1)
        return f"{key} is required: pass {key}=... on the command line (see cnnlab --help)"
    if isinstance(exc, ValueError) and str(exc).startswith("Only one of --run"):  # e.g. -m with --cfg
        return f"{exc}: print a sweep's config without -m (cnnlab train --cfg job ...)"
    if isinstance(exc, CompactHydraException | OmegaConfBaseException):
        return _first_lines(str(exc))
    return None
