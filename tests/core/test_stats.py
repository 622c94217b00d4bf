"""Tests for spikewatch.core.stats."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.stats import LatencySummary, median, percentile, summarize

latencies = st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200)


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.0, 1.0), (0.25, 1.75), (0.5, 2.5), (0.75, 3.25), (0.9, 3.7), (1.0, 4.0)],
)
def test_percentile_interpolates_between_closest_ranks(q: float, expected: float) -> None:
    """Quantiles of [1, 2, 3, 4] match numpy's "linear" method."""
    assert percentile([1.0, 2.0, 3.0, 4.0], q) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value() -> None:
    """A single value is every quantile."""
    assert percentile([0.25], 0.0) == percentile([0.25], 0.99) == percentile([0.25], 1.0) == 0.25


def test_percentile_hits_ranks_exactly() -> None:
    """A quantile that falls on a rank returns that value without arithmetic."""
    assert percentile([0.1, 0.2, 0.3], 0.5) == 0.2


@given(latencies, st.integers(1, 99))
def test_percentile_matches_the_standard_library(values: list[float], k: int) -> None:
    """Percentile k/100 equals statistics.quantiles(method="inclusive"), the same type 7."""
    ordered = sorted(values)
    if len(ordered) < 2:
        ordered = ordered * 2  # statistics.quantiles needs two points
    expected = statistics.quantiles(ordered, n=100, method="inclusive")[k - 1]
    assert percentile(ordered, k / 100) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@given(latencies, st.floats(0, 1), st.floats(0, 1))
def test_percentile_is_bounded_and_monotonic(values: list[float], q1: float, q2: float) -> None:
    """Quantiles stay within [min, max] and never decrease as q grows."""
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert ordered[0] <= percentile(ordered, low) <= percentile(ordered, high) <= ordered[-1]


def test_percentile_rejects_empty() -> None:
    """There is no percentile of nothing."""
    with pytest.raises(ValueError, match="no values"):
        percentile([], 0.5)


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_percentile_rejects_q_outside_unit_interval(q: float) -> None:
    """q must be a fraction in [0, 1], not a percent and not NaN."""
    with pytest.raises(ValueError, match="q must be"):
        percentile([1.0, 2.0], q)


def test_median_sorts_its_input() -> None:
    """The median of unsorted values is the middle one, or the mean of the middle two."""
    assert median([5.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_median_rejects_empty() -> None:
    """There is no median of nothing."""
    with pytest.raises(ValueError, match="no values"):
        median([])


def test_summarize_gives_quantiles_and_max() -> None:
    """A summary of 1..100 ms has the linear-interpolated quantiles and the maximum."""
    summary = summarize(i / 1000 for i in range(100, 0, -1))
    assert summary is not None
    assert summary.count == 100
    assert summary.p50 == pytest.approx(0.0505)
    assert summary.p95 == pytest.approx(0.09505)
    assert summary.p99 == pytest.approx(0.09901)
    assert summary.max == 0.1


def test_summarize_nothing_is_none() -> None:
    """No latencies means no summary, not a summary of zeros."""
    assert summarize([]) is None


def test_summary_as_dict_rounds_to_microseconds() -> None:
    """as_dict gives p50, p95, p99 and max rounded to 6 decimals, without the count."""
    summary = LatencySummary(count=3, p50=0.0012344, p95=0.0012346, p99=1.0, max=2.5)
    assert summary.as_dict() == {"p50": 0.001234, "p95": 0.001235, "p99": 1.0, "max": 2.5}
