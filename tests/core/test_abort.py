"""Tests for spikewatch.core.abort."""

from __future__ import annotations

import math

import pytest

from spikewatch.core.abort import AbortRule


def test_disabled_rule_never_aborts() -> None:
    """Without an error_ratio the spike always runs to the end."""
    assert not AbortRule(error_ratio=None, min_attempts=1).should_abort(10, 10)


def test_no_abort_before_min_attempts() -> None:
    """Failures before min_attempts have finished do not stop the spike."""
    rule = AbortRule(error_ratio=0.5, min_attempts=5)
    assert not rule.should_abort(4, 4)
    assert rule.should_abort(5, 3)


@pytest.mark.parametrize(
    ("finished", "failed", "abort"), [(2, 1, True), (3, 1, False), (4, 4, True)]
)
def test_aborts_at_or_above_ratio(finished: int, failed: int, abort: bool) -> None:
    """The spike stops once the failed share reaches error_ratio, not before."""
    assert AbortRule(error_ratio=0.5, min_attempts=1).should_abort(finished, failed) is abort


def test_ratio_is_compared_exactly_as_written() -> None:
    """7 failures of 100 reach a 0.07 ratio although 0.07 * 100 rounds above 7."""
    assert AbortRule(error_ratio=0.07, min_attempts=1).should_abort(100, 7)


def test_no_failures_never_aborts() -> None:
    """A spike without failures is never stopped, even at the smallest ratio."""
    assert not AbortRule(error_ratio=0.01, min_attempts=1).should_abort(1000, 0)


@pytest.mark.parametrize(("finished", "failed"), [(1, 2), (1, -1), (-1, 0)])
def test_rejects_impossible_counts(finished: int, failed: int) -> None:
    """More failures than finished attempts, or negative counts, are caller bugs."""
    with pytest.raises(ValueError, match="failed <= finished"):
        AbortRule(error_ratio=0.5, min_attempts=1).should_abort(finished, failed)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, math.nan])
def test_rejects_ratio_outside_unit_interval(ratio: float) -> None:
    """error_ratio must be in (0, 1]."""
    with pytest.raises(ValueError, match="error_ratio"):
        AbortRule(error_ratio=ratio, min_attempts=1)


def test_rejects_min_attempts_below_one() -> None:
    """min_attempts must be at least 1, so the ratio never divides by zero."""
    with pytest.raises(ValueError, match="min_attempts"):
        AbortRule(error_ratio=0.5, min_attempts=0)
