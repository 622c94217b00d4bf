"""Comparing two target versions: the Mann-Whitney U test, and the verdict per figure."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from spikewatch.core.compare import compare_versions, mann_whitney_u


def run_doc(
    recovery: float | None, *, ratio: float = 1.0, p95: float = 0.01, result: str = "passed"
) -> dict[str, Any]:
    """Return the parts of a stored run's JSON that a comparison reads."""
    recovered = recovery is not None and not math.isinf(recovery)
    return {
        "result": result,
        "recovery": {"recovered": recovered, "seconds": recovery if recovered else None},
        "spike": {"success_ratio": ratio, "handshake_seconds": {"p95": p95}},
    }


def test_exact_p_value_of_completely_separated_samples() -> None:
    """4 against 4 with no overlap: U = 0 and p = 2/70, the exact two-sided value."""
    u, p = mann_whitney_u([1, 2, 3, 4], [5, 6, 7, 8])
    assert u == 0
    assert p == pytest.approx(2 / 70)


def test_exact_p_value_of_interleaved_samples() -> None:
    """Interleaved samples: U in the middle of its distribution, p = 1."""
    u, p = mann_whitney_u([1, 4, 5, 8], [2, 3, 6, 7])
    assert u == 8
    assert p == pytest.approx(1.0)


def test_exact_p_value_against_a_tabulated_one() -> None:
    """3 against 5, U = 1: P(U <= 1) = 2/56; two-sided 4/56."""
    u, p = mann_whitney_u([1, 2, 4], [3, 5, 6, 7, 8])
    assert u == 1
    assert p == pytest.approx(4 / 56)


def test_normal_approximation_with_ties() -> None:
    """Ties use mid-ranks and the tie-corrected normal approximation (checked by hand)."""
    x, y = [1, 2, 2, 3, 3, 3], [3, 4, 4, 5, 5, 6]
    u, p = mann_whitney_u(x, y)
    assert u == 1.5
    # Tie groups of 1, 2, 4, 2, 2 and 1 values: the sum of t^3 - t is 6 + 60 + 6 + 6 = 78.
    variance = 36 / 12 * (13 - 78 / (12 * 11))
    z = (abs(1.5 - 18) - 0.5) / math.sqrt(variance)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_identical_samples_are_not_different() -> None:
    """Every value equal: no spread to judge, p = 1."""
    assert mann_whitney_u([2.0] * 5, [2.0] * 5) == (12.5, 1.0)


def test_large_samples_use_the_normal_approximation() -> None:
    """Past 400 pairs without ties the approximation is used and stays within [0, 1]."""
    _, p = mann_whitney_u(list(range(30)), list(range(15, 45)))
    assert 0.0 < p < 0.05


def test_an_empty_sample_is_refused() -> None:
    """Nothing to rank on one side is a programming error."""
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


def test_one_version_twice_as_slow_is_different() -> None:
    """Recovery and handshake twice as slow over 12 runs each: both figures are different."""
    rng = random.Random(17)
    old = [run_doc(rng.uniform(2, 3), p95=rng.uniform(0.010, 0.015)) for _ in range(12)]
    new = [run_doc(2 * rng.uniform(2, 3), p95=2 * rng.uniform(0.010, 0.015)) for _ in range(12)]
    doc = compare_versions("t", "s", "2.0", "1.0", new, old).as_dict()
    recovery = doc["figures"]["recovery_seconds"]
    assert recovery["verdict"] == "different"
    assert recovery["version"]["runs"] == recovery["against"]["runs"] == 12
    assert recovery["version"]["median"] > 1.5 * recovery["against"]["median"]
    assert recovery["p_value"] < 0.001
    assert doc["figures"]["spike_handshake_p95_seconds"]["verdict"] == "different"
    # The success ratio is 1.0 throughout: the same.
    assert doc["figures"]["spike_success_ratio"]["verdict"] == "not_different"


def test_two_versions_alike_are_not_different() -> None:
    """Runs drawn from the same distribution: within the run-to-run spread."""
    rng = random.Random(5)
    a = [run_doc(rng.uniform(2, 3), ratio=rng.uniform(0.9, 1.0)) for _ in range(12)]
    b = [run_doc(rng.uniform(2, 3), ratio=rng.uniform(0.9, 1.0)) for _ in range(12)]
    doc = compare_versions("t", "s", "b", "a", b, a).as_dict()
    for figure in doc["figures"].values():
        assert figure["verdict"] == "not_different"
        assert figure["p_value"] >= 0.05


def test_runs_that_did_not_recover_count_as_the_slowest() -> None:
    """+Inf recoveries rank last and show as "+Inf"; the worst success ratio is the lowest."""
    fast = [run_doc(1.0 + i / 10, ratio=1.0) for i in range(5)]
    stuck = [run_doc(math.inf, ratio=0.5 + i / 100) for i in range(5)]
    doc = compare_versions("t", "s", "bad", "good", stuck, fast).as_dict()
    recovery = doc["figures"]["recovery_seconds"]
    assert recovery["version"] == {"runs": 5, "median": "+Inf", "worst": "+Inf"}
    assert recovery["verdict"] == "different"
    assert doc["figures"]["spike_success_ratio"]["version"]["worst"] == 0.5


def test_too_few_runs_and_runs_that_do_not_describe_the_target() -> None:
    """Fewer than 4 measured runs on a side: too few to tell; invalid runs and missing
    figures are left out of the count."""
    good = [run_doc(1.0), run_doc(1.1), run_doc(1.2), run_doc(9.0, result="invalid")]
    other = [
        run_doc(5.0),
        run_doc(6.0),
        run_doc(7.0),
        run_doc(8.0),
        {"result": "passed", "recovery": None, "spike": None},
    ]
    doc = compare_versions("t", "s", "x", "y", good, other).as_dict()
    recovery = doc["figures"]["recovery_seconds"]
    assert recovery["verdict"] == "too_few_runs"
    assert recovery["p_value"] is None
    assert (recovery["version"]["runs"], recovery["against"]["runs"]) == (3, 4)
    assert recovery["version"]["median"] == 1.1
    empty = compare_versions("t", "s", "x", "y", [], []).as_dict()["figures"]["recovery_seconds"]
    assert empty["version"] == {"runs": 0, "median": None, "worst": None}
    assert (
        compare_versions("t", "s", "x", "y", other[:4], []).as_dict()["figures"][
            "recovery_seconds"
        ]["against"]["median"]
        is None
    )
