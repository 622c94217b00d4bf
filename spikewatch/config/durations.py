"""Durations in the config: numbers of seconds, or strings like ``250ms``, ``5s``, ``1m30s``."""

from __future__ import annotations

import math
import re
from typing import Annotated, Final

from pydantic import BeforeValidator, Field

__all__ = ["MAX_SECONDS", "Duration", "PositiveDuration", "parse_duration"]

_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# ASCII only: `\d` would also accept digits from other scripts, which float() happens to
# parse but nobody means in a config file.
_NUMBER: Final = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# "ms" comes before "m" so that 250ms is not read as 250 minutes followed by junk.
_PART: Final = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_COMPOUND: Final = re.compile(rf"(?:{_NUMBER}(?:ms|h|m|s))+")
_BARE: Final = re.compile(rf"{_NUMBER}(?:[eE][+-]?[0-9]+)?")

_EXPECTED: Final = "expected a duration like 250ms, 5s or 15m"

#: The longest duration accepted. Schedules become ``timedelta``s, which overflow past
#: about 2.7 million years with an OverflowError at start-up; nothing spikewatch waits
#: for is meant to take longer than a year.
MAX_SECONDS: Final = 365 * 86400.0


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds: a number of seconds, or a string like ``250ms`` or ``1m30s``.

    Raise :class:`ValueError` for anything else, for negative and non-finite values, and
    for more than :data:`MAX_SECONDS` (365 days).
    """
    # bool is an int subclass; ``true`` in a duration field is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        # ValueError, not TypeError: pydantic turns only ValueError into a field problem.
        raise ValueError(f"{_EXPECTED}, got {_describe(value)}")  # noqa: TRY004
    if isinstance(value, str):
        seconds = _parse_text(value)
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            raise ValueError("is too large") from None
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_SECONDS:
        raise ValueError("must be at most 365 days")
    return seconds


def _parse_text(text: str) -> float:
    body = text.strip()
    negative = body.startswith("-")
    if body.startswith(("-", "+")):
        body = body[1:]
    if _BARE.fullmatch(body):
        seconds = float(body)
    elif _COMPOUND.fullmatch(body):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(body))
    else:
        raise ValueError(f"{_EXPECTED}, got {_describe(text)}")
    return -seconds if negative else seconds


def _describe(value: object) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


#: Seconds, at least 0: ``hold: 0s`` is a real choice.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
#: Seconds, more than 0: intervals and timeouts, where 0 would spin or never wait.
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
