"""Checks of model arguments, so a bad value in model.* is one line naming the key, not a torch error later."""

from collections.abc import Sequence
from typing import Any

from cnnlab.errors import UserError


def is_whole(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def whole(key: str, value: Any, minimum: int = 1, example: str = "") -> int:
    """`value` as an int >= minimum, else a UserError naming model.<key>."""
    if not is_whole(value, minimum):
        hint = f" (for example model.{key}={example})" if example else ""
        raise UserError(f"model.{key}={value!r} is invalid: must be a whole number >= {minimum}{hint}")
    return value


def whole_list(key: str, values: Any, example: str, minimum: int = 1) -> list[int]:
    """A list of whole numbers >= minimum (a single number or a string is refused, not split into pieces)."""
    if (
        isinstance(values, str | bytes)
        or not isinstance(values, Sequence)
        or not all(is_whole(v, minimum) for v in values)
    ):
        raise UserError(
            f"model.{key}={values!r} is invalid: must be a list of whole numbers >= {minimum} (for example "
            f"model.{key}={example})"
        )
    return list(values)


def fraction(key: str, value: Any, upper_open: bool = True) -> float:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and 0 <= value
        and (value < 1 if upper_open else value <= 1)
    )
    if not ok:
        raise UserError(f"model.{key}={value!r} is invalid: must be a number in [0, {'1)' if upper_open else '1]'}")
    return float(value)


def odd_kernel(value: Any) -> int:
    if not is_whole(value) or value % 2 == 0:
        raise UserError(f"model.kernel_size={value!r} is invalid: use an odd whole number such as 3 or 5")
    return value
