"""Runtime stage layer: parsing of the spec's policy values (durations, rates) shared by the stage units."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m)\b")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from `"5s"`, `"10m"`, `"250ms"`, `"30d"` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 5s, 10m, 250ms)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_rate(value: Any) -> float:
    """Events per second from `"20/s"`, `"600/m"` (a trailing `per connection` is allowed) or a number."""
    if isinstance(value, bool):
        raise ValueError(f"not a rate: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _RATE.match(str(value))
    if match is None:
        raise ValueError(f"not a rate: {value!r} (expected e.g. 20/s)")
    return float(match.group(1)) / _UNITS[match.group(2)]


def choice(policy: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    """A policy key restricted to named values."""
    value = str(policy.get(key, default))
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    return value
