"""The search space, written with Hydra's override grammar, turned into Optuna distributions.

    lr=tag(log,interval(1e-4,1))       FloatDistribution(1e-4, 1, log=True)
    model.depth=tag(int,interval(1,4)) IntDistribution(1, 4)
    model.width=range(16,64,step=16)   IntDistribution(16, 48, step=16)  (stop excluded, as in Python)
    batch_size=choice(128,256,512)     CategoricalDistribution; `lr=0.01,0.1` is a choice too
Anything else (`epochs=3`, `model=efficient`) is a fixed override passed to every trial as written.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnnlab.errors import UserError
from cnnlab.run_folder import override_key

_PLAIN = re.compile(r"^[A-Za-z_][\w\-./]*$")


@dataclass
class SearchSpace:
    """Distributions keyed by config path, plus the overrides every trial gets unchanged."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)
    prefixes: dict[str, str] = field(default_factory=dict)  # "+" for a key the trial adds to the config

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """The command-line overrides of one trial: the fixed ones, then its sampled values."""
        sampled = [f"{self.prefixes.get(k, '')}{k}={format_value(v)}" for k, v in params.items()]
        return [*self.fixed, *sampled]

    def describe(self) -> dict[str, str]:
        """A stable text form, stored with the study so a resumed sweep can check it searches the same space."""
        return {key: repr(dist) for key, dist in sorted(self.distributions.items())}


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in ("null", "true", "false", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _interval(key: str, sweep: IntervalSweep) -> BaseDistribution:
    unknown = sweep.tags - {"log", "int"}
    if unknown:
        raise UserError(f"{key}: unknown tag {sorted(unknown)} in interval(); use tag(log, ...) and/or tag(int, ...)")
    low, high, log = sweep.start, sweep.end, "log" in sweep.tags
    if low is None or high is None or not low < high:
        raise UserError(f"{key}=interval({low}, {high}) is empty: the lower bound must be below the upper one")
    if log and low <= 0:
        raise UserError(f"{key}=tag(log, interval({low}, {high})): a log scale needs a lower bound > 0")
    if "int" in sweep.tags:
        if low != math.floor(low) or high != math.floor(high):
            raise UserError(f"{key}=tag(int, interval({low}, {high})): the bounds must be whole numbers")
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(key: str, sweep: RangeSweep) -> BaseDistribution:
    values = _range_values(sweep)
    if not values:
        raise UserError(f"{key}=range({sweep.start}, {sweep.stop}, step={sweep.step}) holds no value")
    if all(isinstance(v, int) for v in values) and len(values) > 1:
        return IntDistribution(min(values), max(values), step=abs(int(sweep.step)))
    return CategoricalDistribution(values)


def _range_values(sweep: RangeSweep) -> list[Any]:
    start, stop, step = sweep.start, sweep.stop, sweep.step
    if not step:
        return []
    values, value = [], start
    while (step > 0 and value < stop) or (step < 0 and value > stop):
        values.append(value)
        value = value + step
    return values


def _choice(key: str, sweep: ChoiceSweep) -> BaseDistribution:
    choices = list(sweep.list)
    for choice in choices:
        if not (choice is None or isinstance(choice, bool | int | float | str)):
            raise UserError(
                f"{key}: choice() options must be numbers, strings, true/false or null, not {choice!r}; "
                "search list entries one at a time (for example model.widths.0=choice(16,32))"
            )
    if len(set(map(repr, choices))) != len(choices):
        raise UserError(f"{key}: choice() lists an option twice: {choices}")
    return CategoricalDistribution(choices)


def distribution_of(override: Override) -> BaseDistribution:
    key, sweep = override.get_key_element(), override.value()
    if isinstance(sweep, IntervalSweep):
        return _interval(key, sweep)
    if isinstance(sweep, RangeSweep):
        return _range(key, sweep)
    if isinstance(sweep, ChoiceSweep):
        return _choice(key, sweep)
    raise UserError(f"{override.input_line}: glob() cannot be searched; list the options with choice(...)")


def parse_search_space(arguments: Sequence[str], params: dict[str, str] | None = None) -> SearchSpace:
    """Split command-line overrides (and the sweeper's `params` from the config) into a SearchSpace.

    A key given on the command line replaces the same key from the config's params.
    """
    parser = OverridesParser.create()
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    given = {override_key(line) for line in arguments if "=" in line}
    lines = [line for line in lines if override_key(line) not in given] + list(arguments)
    space = SearchSpace()
    for override in parser.parse_overrides(lines):
        if not override.is_sweep_override():
            space.fixed.append(override.input_line)
            continue
        if override.is_hydra_override():
            raise UserError(f"{override.input_line}: hydra.* settings cannot be searched; give them one value")
        key, line = override.key_or_group, override.input_line or ""
        space.distributions[key] = distribution_of(override)
        prefix = line[: len(line) - len(line.lstrip("+"))]
        if prefix:
            space.prefixes[key] = prefix
    if not space.distributions:
        raise UserError(
            "nothing to search: give at least one range on the command line, "
            "for example 'lr=tag(log,interval(1e-3,1))' or batch_size=choice(128,256)"
        )
    return space
