"""Durations: numbers of seconds or strings like 250ms, 5s, 1m30s."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import TypeAdapter, ValidationError

from spikewatch.config.durations import Duration, PositiveDuration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("5s", 5.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1m30s", 90.0),
        ("1h2m3s4ms", 3723.004),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2.s", 2.0),
        ("0.5", 0.5),
        ("10", 10.0),
        ("1e3", 1000.0),
        (" 5s ", 5.0),
        ("+5s", 5.0),
        ("0s", 0.0),
    ],
)
def test_valid_durations(value: object, seconds: float) -> None:
    """Numbers are seconds; strings take ms, s, m, h units, compounded or bare."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "expected a duration like 250ms, 5s or 15m, got 'abc'"),
        ("", "got ''"),
        ("5 s", "got '5 s'"),
        ("5S", "got '5S'"),
        ("5d", "got '5d'"),
        ("ms", "got 'ms'"),
        ("1m-30s", "got '1m-30s'"),
        ("\u0663s", "expected a duration"),  # an Arabic-Indic digit three
        ("x" * 100, "got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"),
        (True, "got True"),
        (None, "got null"),
        ([1], "got a list"),
        ({"s": 1}, "got a mapping"),
        (b"5s", "got bytes"),
        ("-5s", "must not be negative"),
        ("-1", "must not be negative"),
        (-0.5, "must not be negative"),
        ("nan", "expected a duration"),
        ("inf", "expected a duration"),
        (math.nan, "must be a finite duration"),
        (math.inf, "must be a finite duration"),
        ("1e400", "must be a finite duration"),
        ("9" * 400 + "s", "must be a finite duration"),
        (10**400, "is too large"),
    ],
)
def test_invalid_durations(value: object, message: str) -> None:
    """Anything else is a ValueError that says what a duration looks like."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


def test_duration_type_accepts_zero_and_positive_duration_does_not() -> None:
    """Duration allows 0s; PositiveDuration needs more than 0."""
    assert TypeAdapter(Duration).validate_python("0s") == 0.0
    assert TypeAdapter(PositiveDuration).validate_python("20ms") == pytest.approx(0.02)
    with pytest.raises(ValidationError, match="greater than 0"):
        TypeAdapter(PositiveDuration).validate_python(0)
