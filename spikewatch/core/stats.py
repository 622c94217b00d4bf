"""Percentiles and latency summaries over plain lists of seconds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the ``q``-quantile (``q`` in [0, 1]) of ascending ``sorted_values``.

    Interpolate linearly between the closest ranks, as numpy's default ``"linear"`` method
    (Hyndman & Fan type 7) does. The input must already be sorted; it is not checked.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    position = (len(sorted_values) - 1) * q
    lower = math.floor(position)
    fraction = position - lower
    low = sorted_values[lower]
    if fraction == 0.0:
        return low
    high = sorted_values[lower + 1]
    # Interpolate from the nearer end, as numpy does, so that the result never leaves
    # [low, high] by a rounding error and stays monotonic in q.
    if fraction < 0.5:
        return low + (high - low) * fraction
    return high - (high - low) * (1.0 - fraction)


def median(values: Iterable[float]) -> float:
    """Return the median of ``values`` (the mean of the middle two for an even count)."""
    return percentile(sorted(values), 0.5)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """The distribution of a set of latencies, in seconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        """Return the quantiles for the run result, rounded to microseconds."""
        return {
            "p50": round(self.p50, 6),
            "p95": round(self.p95, 6),
            "p99": round(self.p99, 6),
            "max": round(self.max, 6),
        }


def summarize(values: Iterable[float]) -> LatencySummary | None:
    """Summarize latencies; return None when there are none (nothing was measured)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return LatencySummary(
        count=len(ordered),
        p50=percentile(ordered, 0.5),
        p95=percentile(ordered, 0.95),
        p99=percentile(ordered, 0.99),
        max=ordered[-1],
    )
