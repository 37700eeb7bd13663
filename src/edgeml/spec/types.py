"""Small value types shared by the spec models: names, durations, topic filters."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, StringConstraints, WithJsonSchema

__all__ = ["Duration", "Identifier", "Slug", "parse_duration"]

#: Lower-case names used in URLs, store keys and metric labels (model, source, channel).
Slug = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$"),
    Field(json_schema_extra={"examples": ["pump-faults"]}),
]
#: Column and feature names: valid identifiers, so they work in expressions and model graphs.
Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]

_MICROSECOND = timedelta(microseconds=1)
#: microseconds per unit: durations are computed exactly, never through a lossy float
_UNITS = {
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_KINDS = "a duration is a number of seconds or a string like '5m', '1h30m'"


def parse_duration(value: Any) -> timedelta:
    """``90``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"7d"`` -> timedelta. Must be positive."""
    if isinstance(value, timedelta):
        micros = Decimal(value // _MICROSECOND)
    elif isinstance(value, bool):
        raise ValueError(_KINDS)
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; {_KINDS}")
        micros = Decimal(value) * _UNITS["s"]
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            if re.fullmatch(r"\d+(\.\d+)?", text):
                raise ValueError(f"{value!r} has no unit; write e.g. '{text}s' or '{text}m'")
            if text.startswith("-") and _PART.sub("", text[1:]) == "" and text[1:]:
                raise ValueError(f"a duration must be positive, got {value!r}")
            raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m', '1h30m', '7d'")
        micros = sum((Decimal(n) * _UNITS[u] for n, u in parts), Decimal(0))
    else:
        raise ValueError(_KINDS)
    if micros <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    whole = round(micros)
    if whole == 0:
        raise ValueError(f"{value!r} is shorter than a microsecond, the finest a duration resolves")
    try:
        return timedelta(microseconds=whole)
    except OverflowError:
        raise ValueError(
            f"{value!r} is too long for a duration (at most {timedelta.max.days} days)"
        ) from None


def _format_duration(value: timedelta) -> str:
    """Exact, so it parses back to ``value``: the largest whole unit (w, d, h, m, s), else decimal seconds."""
    micros = value // _MICROSECOND
    for unit in ("w", "d", "h", "m", "s"):
        if micros % _UNITS[unit] == 0:
            return f"{micros // _UNITS[unit]}{unit}"
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}".rstrip("0") + "s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(_format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"},
                {"type": "number", "exclusiveMinimum": 0},
            ],
            "description": "seconds, or a string like '30s', '5m', '1h30m', '7d'",
        }
    ),
]
