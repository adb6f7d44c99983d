"""Durations written the way people say them: 90s, 10m, 1h30m."""

import re

from cnnlab.errors import UserError

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)")


def parse_duration(text: str | int | float, key: str = "trainer.time_budget") -> float:
    """'90s', '10m', '1h30m' or a number of seconds -> seconds; `key` names the setting in an error."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower().replace(" ", "")
        parts = _PART.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise UserError(f"{key}={text!r} is invalid: use a duration such as 90s, 10m or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not 1 <= seconds < float("inf"):
        raise UserError(f"{key}={text!r} is invalid: it must be at least 1 second, such as 90s or 10m")
    return seconds
