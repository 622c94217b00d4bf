"""One target version against another, from stored runs (issue 17): pure.

Three figures of each run that describes the target (``passed``, ``failed``,
``aborted``): its recovery time (a run that did not recover counts as the slowest,
+Inf), its spike success ratio and its spike handshake p95. For each figure the two
versions' per-run values are compared with the Mann-Whitney U test (two-sided): the
difference is larger than the run-to-run spread when p < ``alpha`` (0.05). The p-value
is exact (the U distribution by counting) when there are no ties and at most 400 pairs
of runs, else the normal approximation with tie and continuity corrections. A rank
test, so one outlier run cannot make a difference alone, and +Inf ranks as the slowest
without distorting a mean. With fewer than 4 runs of a version the verdict is
``too_few_runs``: the exact test cannot reach p < 0.05 with 3 against 3.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal

__all__ = [
    "ALPHA",
    "FIGURES",
    "MIN_RUNS",
    "Comparison",
    "FigureComparison",
    "compare_versions",
    "mann_whitney_u",
]

ALPHA: Final = 0.05
MIN_RUNS: Final = 4
#: Up to this many pairs (n1 x n2) without ties the p-value is exact.
_EXACT_PAIRS: Final = 400
_MEASURED: Final = frozenset({"passed", "failed", "aborted"})

_HIGHER_IS_BETTER: Final = frozenset({"spike_success_ratio"})

Verdict = Literal["different", "not_different", "too_few_runs"]


def _recovery(doc: Mapping[str, Any]) -> float | None:
    recovery = doc.get("recovery")
    if not recovery:
        return None
    if not recovery.get("recovered"):
        return math.inf
    seconds = recovery.get("seconds")
    return None if seconds is None else float(seconds)


def _success_ratio(doc: Mapping[str, Any]) -> float | None:
    spike = doc.get("spike")
    ratio = spike.get("success_ratio") if spike else None
    return None if ratio is None else float(ratio)


def _handshake_p95(doc: Mapping[str, Any]) -> float | None:
    spike = doc.get("spike")
    handshake = spike.get("handshake_seconds") if spike else None
    p95 = handshake.get("p95") if handshake else None
    return None if p95 is None else float(p95)


#: Each figure's name and how it is read from a run's JSON document.
FIGURES: Final[Mapping[str, Callable[[Mapping[str, Any]], float | None]]] = {
    "recovery_seconds": _recovery,
    "spike_success_ratio": _success_ratio,
    "spike_handshake_p95_seconds": _handshake_p95,
}


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Return the mid-ranks of ``values`` (1-based) and the sizes of their tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@cache
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """Return how many of the C(m+n, m) orderings give each U = 0..m*n (no ties)."""
    if m == 0 or n == 0:
        return (1,)
    # f(m, n, u) = f(m-1, n, u-n) + f(m, n-1, u): is the largest value from the first sample?
    with_last_m = _u_counts(m - 1, n)
    with_last_n = _u_counts(m, n - 1)
    counts = [0] * (m * n + 1)
    for u, ways in enumerate(with_last_m):
        counts[u + n] += ways
    for u, ways in enumerate(with_last_n):
        counts[u] += ways
    return tuple(counts)


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Return U of ``x`` (pairs where x > y, ties half) and the two-sided p-value."""
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _ranks([*x, *y])
    u = sum(ranks[:m]) - m * (m + 1) / 2
    if all(t == 1 for t in ties) and m * n <= _EXACT_PAIRS:
        counts = _u_counts(m, n)
        total = sum(counts)
        low = sum(counts[: int(u) + 1]) / total
        high = sum(counts[int(u) :]) / total
        return u, min(1.0, 2 * min(low, high))
    mean = m * n / 2
    tie_term = sum(t**3 - t for t in ties) / ((m + n) * (m + n - 1))
    variance = m * n / 12 * ((m + n + 1) - tie_term)
    if variance <= 0:  # every value the same
        return u, 1.0
    z = (abs(u - mean) - 0.5) / math.sqrt(variance)
    return u, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    low, high = ordered[mid - 1], ordered[mid]
    return high if math.isinf(high) else (low + high) / 2


def _number(value: float | None) -> float | str | None:
    """JSON has no infinity: +Inf (did not recover) is written "+Inf"."""
    if value is None:
        return None
    return "+Inf" if math.isinf(value) else round(value, 6)


@dataclass(frozen=True, slots=True)
class FigureComparison:
    """One figure of two versions: per-run values, and whether they differ."""

    figure: str
    version: Sequence[float]
    against: Sequence[float]
    p_value: float | None
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""

        worst = min if self.figure in _HIGHER_IS_BETTER else max

        def side(values: Sequence[float]) -> dict[str, Any]:
            return {
                "runs": len(values),
                "median": _number(_median(values)),
                "worst": _number(worst(values) if values else None),
            }

        return {
            "version": side(self.version),
            "against": side(self.against),
            "p_value": None if self.p_value is None else round(self.p_value, 6),
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """A target x scenario's ``version`` against ``against``, figure by figure."""

    target: str
    scenario: str
    version: str
    against: str
    figures: tuple[FigureComparison, ...]

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "target": self.target,
            "scenario": self.scenario,
            "version": self.version,
            "against": self.against,
            "alpha": ALPHA,
            "method": "Mann-Whitney U, two-sided (exact without ties up to 400 pairs)",
            "figures": {f.figure: f.as_dict() for f in self.figures},
        }


def compare_figure(
    figure: str, version: Sequence[float], against: Sequence[float]
) -> FigureComparison:
    """Compare one figure's per-run values of two versions."""
    if len(version) < MIN_RUNS or len(against) < MIN_RUNS:
        return FigureComparison(figure, version, against, None, "too_few_runs")
    _, p = mann_whitney_u(version, against)
    return FigureComparison(
        figure, version, against, p, "different" if p < ALPHA else "not_different"
    )


def compare_versions(  # noqa: PLR0917 - the pair, the two versions, and their runs
    target: str,
    scenario: str,
    version: str,
    against: str,
    version_runs: Sequence[Mapping[str, Any]],
    against_runs: Sequence[Mapping[str, Any]],
) -> Comparison:
    """Compare the stored runs (JSON documents) of two versions of a target x scenario.

    Only runs whose figures describe the target count; a figure a run did not measure
    is left out of that figure's values (so each figure says how many runs are behind it).
    """

    def values(runs: Sequence[Mapping[str, Any]], read: Callable[..., float | None]) -> list[float]:
        found = (read(doc) for doc in runs if doc.get("result") in _MEASURED)
        return [v for v in found if v is not None]

    figures = tuple(
        compare_figure(name, values(version_runs, read), values(against_runs, read))
        for name, read in FIGURES.items()
    )
    return Comparison(target, scenario, version, against, figures)
