"""Tests for spikewatch.core.verdict."""

from __future__ import annotations

import dataclasses

import pytest

from spikewatch.core.outcomes import RunResultKind
from spikewatch.core.verdict import (
    Measurements,
    ThresholdCheck,
    ThresholdLimits,
    decide_result,
    evaluate_thresholds,
)

GOOD = Measurements(
    success_ratio=1.0,
    handshake_p95=0.05,
    first_message_p95=0.01,
    message_rtt_p95=0.002,
    recovered=True,
    recovery_seconds=1.5,
    dropped_stable=0,
)
ALL_LIMITS = ThresholdLimits(
    success_ratio=0.99,
    handshake_p95=1.0,
    first_message_p95=0.5,
    message_rtt_p95=0.5,
    recovery=60.0,
    dropped_stable=0,
)


def names(checks: tuple[ThresholdCheck, ...]) -> list[str]:
    """Return the check names in order."""
    return [check.name for check in checks]


def test_all_thresholds_in_contract_order() -> None:
    """Every configured threshold is checked in the documented order, then recovered."""
    checks = evaluate_thresholds(ALL_LIMITS, GOOD)
    assert names(checks) == [
        "success_ratio",
        "handshake_p95",
        "first_message_p95",
        "message_rtt_p95",
        "recovery",
        "dropped_stable",
        "recovered",
    ]
    assert all(check.passed for check in checks)
    assert checks[4] == ThresholdCheck("recovery", 60.0, 1.5, passed=True)


def test_only_configured_thresholds_are_checked() -> None:
    """Unset thresholds are skipped; the implicit recovered check is always there."""
    checks = evaluate_thresholds(ThresholdLimits(handshake_p95=1.0), GOOD)
    assert names(checks) == ["handshake_p95", "recovered"]


def test_no_thresholds_still_checks_recovery() -> None:
    """A scenario without thresholds still fails when the target did not recover."""
    lost = dataclasses.replace(GOOD, recovered=False, recovery_seconds=None)
    assert evaluate_thresholds(ThresholdLimits(), lost) == (
        ThresholdCheck("recovered", 1.0, 0.0, passed=False),
    )


@pytest.mark.parametrize(("ratio", "passed"), [(0.99, True), (1.0, True), (0.98, False)])
def test_success_ratio_passes_at_or_above_limit(ratio: float, passed: bool) -> None:
    """success_ratio passes when the value is at least the limit."""
    m = dataclasses.replace(GOOD, success_ratio=ratio)
    (check, _) = evaluate_thresholds(ThresholdLimits(success_ratio=0.99), m)
    assert check == ThresholdCheck("success_ratio", 0.99, ratio, passed)


@pytest.mark.parametrize(
    "name", ["handshake_p95", "first_message_p95", "message_rtt_p95", "recovery"]
)
@pytest.mark.parametrize(("value", "passed"), [(0.5, True), (0.4, True), (0.51, False)])
def test_time_thresholds_pass_at_or_below_limit(name: str, value: float, passed: bool) -> None:
    """Latency and recovery thresholds pass when the value is at most the limit."""
    field = "recovery_seconds" if name == "recovery" else name
    m = dataclasses.replace(GOOD, **{field: value})
    (check, _) = evaluate_thresholds(ThresholdLimits(**{name: 0.5}), m)
    assert check == ThresholdCheck(name, 0.5, value, passed)


@pytest.mark.parametrize(("dropped", "passed"), [(0, True), (2, True), (3, False)])
def test_dropped_stable_passes_at_or_below_limit(dropped: int, passed: bool) -> None:
    """dropped_stable passes when no more stable connections were lost than allowed."""
    m = dataclasses.replace(GOOD, dropped_stable=dropped)
    (check, _) = evaluate_thresholds(ThresholdLimits(dropped_stable=2), m)
    assert check == ThresholdCheck("dropped_stable", 2, dropped, passed)


@pytest.mark.parametrize(
    "name", ["success_ratio", "handshake_p95", "first_message_p95", "message_rtt_p95"]
)
def test_unmeasured_value_fails(name: str) -> None:
    """A value that could not be measured (None) fails its threshold, with value None."""
    m = dataclasses.replace(GOOD, **{name: None})
    (check, _) = evaluate_thresholds(ThresholdLimits(**{name: 0.5}), m)
    assert check == ThresholdCheck(name, 0.5, None, passed=False)


def test_not_recovered_fails_recovery_threshold_with_no_value() -> None:
    """Without recovery, the recovery threshold has no value and fails, as does recovered."""
    m = dataclasses.replace(GOOD, recovered=False, recovery_seconds=None)
    checks = evaluate_thresholds(ThresholdLimits(recovery=60.0), m)
    assert checks == (
        ThresholdCheck("recovery", 60.0, None, passed=False),
        ThresholdCheck("recovered", 1.0, 0.0, passed=False),
    )


def test_recovery_seconds_ignored_when_not_recovered() -> None:
    """A stray recovery time is not used when the run did not recover."""
    m = dataclasses.replace(GOOD, recovered=False, recovery_seconds=1.0)
    (check, _) = evaluate_thresholds(ThresholdLimits(recovery=60.0), m)
    assert check.value is None
    assert not check.passed


def test_check_as_dict() -> None:
    """as_dict gives the run result's name, limit, value and passed."""
    check = ThresholdCheck("success_ratio", 0.99, 0.96, passed=False)
    assert check.as_dict() == {
        "name": "success_ratio",
        "limit": 0.99,
        "value": 0.96,
        "passed": False,
    }


PASS = ThresholdCheck("handshake_p95", 1.0, 0.1, passed=True)
FAIL = ThresholdCheck("handshake_p95", 1.0, 2.0, passed=False)


@pytest.mark.parametrize(
    ("invalid", "target_down", "aborted", "checks", "result"),
    [
        (True, True, True, [FAIL], RunResultKind.INVALID),
        (False, True, True, [FAIL], RunResultKind.TARGET_DOWN),
        (False, False, True, [FAIL], RunResultKind.ABORTED),
        (False, False, False, [PASS, FAIL], RunResultKind.FAILED),
        (False, False, False, [PASS, PASS], RunResultKind.PASSED),
        (False, False, False, [], RunResultKind.PASSED),
    ],
)
def test_result_precedence(
    invalid: bool,
    target_down: bool,
    aborted: bool,
    checks: list[ThresholdCheck],
    result: RunResultKind,
) -> None:
    """invalid beats target_down beats aborted beats failed beats passed."""
    assert (
        decide_result(target_down=target_down, aborted=aborted, invalid=invalid, checks=checks)
        is result
    )
