"""Durations written the caikit way: ``7d12h``, ``90m``, ``1h30m15s``, ``250ms``.

A duration is a sequence of ``<number><unit>`` pairs with units ``d`` (days),
``h`` (hours), ``m`` (minutes), ``s`` (seconds) and ``ms`` (milliseconds); each
unit at most once, largest first. A bare number (int or float, YAML or string)
means seconds.
"""

from __future__ import annotations

import datetime
import re

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ["d", "h", "m", "s", "ms"]
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")


#: The longest duration accepted: 100 years (a timedelta overflows near 2.7 million).
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(value: object) -> datetime.timedelta:
    """Parse ``value`` into a timedelta.

    Raises:
        ValueError: with a message that shows the accepted syntax.
    """
    hint = "write it like '7d12h', '90m', '1h30m15s', '250ms' or a number of seconds"
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {hint}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(value, text, hint)
    else:
        raise ValueError(f"{value!r} is not a duration; {hint}")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a usable duration (it must be >= 0); {hint}")
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"{value!r} is longer than the longest duration trainerkit accepts (100 years, "
            f"'{MAX_SECONDS // 86400}d'); use null where there is no limit"
        )
    return datetime.timedelta(seconds=seconds)


def _parse_units(original: str, text: str, hint: str) -> float:
    position, seconds, last_rank = 0, 0.0, -1
    if not text:
        raise ValueError(f"an empty string is not a duration; {hint}")
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        unit = match.group(2)
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"{original!r} is not a duration: units must appear once each, largest first; {hint}"
            )
        last_rank = rank
        seconds += float(match.group(1)) * _UNIT_SECONDS[unit]
        position = match.end()
    if position != len(text):
        raise ValueError(f"{original!r} is not a duration; {hint}")
    return seconds


def format_duration(delta: datetime.timedelta) -> str:
    """The shortest ``7d12h``-style text for ``delta`` (milliseconds precision)."""
    millis = round(delta.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit in _UNIT_ORDER:
        size = round(_UNIT_SECONDS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
