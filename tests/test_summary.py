"""Tests for spikewatch.summary."""

from __future__ import annotations

import dataclasses

from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.core.result import (
    BaselineSummary,
    ErrorGroup,
    ProberReport,
    RecoverySummary,
    RunResult,
    SpikeSummary,
    StableSummary,
)
from spikewatch.core.stats import LatencySummary
from spikewatch.core.verdict import ThresholdCheck
from spikewatch.summary import format_summary
from tests.daemon.fakes import finished_result


def full_run() -> RunResult:
    """Return a passed run with every part: stable, spike timings, recovery, thresholds, errors."""
    return dataclasses.replace(
        finished_result(run_id="run-1", duration=12.345),
        stable=StableSummary(
            connections=10,
            opened=10,
            dropped=1,
            outcomes={"ok": 10},
            message_rtt=None,
            drop_example="no pong within 5s",
        ),
        spike=SpikeSummary(
            attempted=25,
            outcomes={"ok": 24, "timeout": 1},
            handshake=LatencySummary(count=25, p50=0.01, p95=0.05, p99=0.08, max=0.09),
            first_message=LatencySummary(count=24, p50=0.001, p95=0.002, p99=0.003, max=0.004),
            message_rtt=LatencySummary(count=24, p50=0.002, p95=0.01, p99=0.02, max=0.02),
            start_lateness=LatencySummary(count=25, p50=0.0, p95=0.002, p99=0.003, max=0.004),
        ),
        thresholds=(
            ThresholdCheck("success_ratio", 0.95, 0.96, passed=True),
            ThresholdCheck("handshake_p95", 0.1, 0.05, passed=True),
            ThresholdCheck("recovered", 1, 1, passed=True),
        ),
        prober=ProberReport(
            saturated=False, loop_lag_p99=0.0012, cpu_percent=35.4, rss_bytes=52_000_000
        ),
        errors=(ErrorGroup(Outcome.TIMEOUT, 1, "no upgrade answer within 5s", Phase.SPIKE),),
    )


def test_passed_run_in_full() -> None:
    """A passed run shows each phase on its own aligned line, thresholds and errors last."""
    assert format_summary(full_run()).splitlines() == [
        "avalanche → chat-staging: PASSED in 12.35s (run run-1)",
        "  baseline    5/5 ok, B = 4.00 ms",
        "  stable      10/10 open, 1 dropped (no pong within 5s)",
        "  spike       25 attempted: 24 ok, 1 timeout (96.0% ok)",
        "  handshake   p50 10.00 ms  p95 50.00 ms  p99 80.00 ms  max 90.00 ms  (n=25)",
        "  welcome     p50 1.00 ms  p95 2.00 ms  p99 3.00 ms  max 4.00 ms  (n=24)",
        "  echo rtt    p50 2.00 ms  p95 10.00 ms  p99 20.00 ms  max 20.00 ms  (n=24)",
        "  lateness    p50 0.00 ms  p95 2.00 ms  p99 3.00 ms  max 4.00 ms  (n=25)",
        "  recovery    recovered after 1.500s (7 probes, good ≤ 10.00 ms: 7 ok)",
        "  threshold   ok   success_ratio = 0.96 (limit 0.95)",
        "  threshold   ok   handshake_p95 = 0.05 (limit 0.1)",
        "  threshold   ok   recovered = 1 (limit 1)",
        "  prober      loop lag p99 1.20 ms, CPU 35% during the spike, RSS 52 MB",
        "  error       timeout x1 (first in spike): no upgrade answer within 5s",
    ]


def test_failed_threshold_is_marked() -> None:
    """A missed threshold reads FAIL; one that could not be measured shows n/a."""
    result = dataclasses.replace(
        full_run(),
        result=RunResultKind.FAILED,
        thresholds=(
            ThresholdCheck("success_ratio", 0.99, 0.96, passed=False),
            ThresholdCheck("message_rtt_p95", 0.5, None, passed=False),
        ),
    )
    lines = format_summary(result).splitlines()
    assert lines[0] == "avalanche → chat-staging: FAILED in 12.35s (run run-1)"
    assert "  threshold   FAIL success_ratio = 0.96 (limit 0.99)" in lines
    assert "  threshold   FAIL message_rtt_p95 = n/a (limit 0.5)" in lines


def test_stable_without_drops_has_no_example() -> None:
    """Stable connections that all held show no drop example."""
    result = dataclasses.replace(
        full_run(),
        stable=StableSummary(
            connections=10, opened=9, dropped=0, outcomes={"ok": 9, "refused": 1}, message_rtt=None
        ),
    )
    assert "  stable      9/10 open, 0 dropped" in format_summary(result).splitlines()


def test_target_down_run_has_no_spike() -> None:
    """A target_down run shows its message and baseline, and no spike or recovery."""
    result = dataclasses.replace(
        finished_result(result=RunResultKind.TARGET_DOWN, run_id="run-2"),
        message="only 1 of 5 baseline probes succeeded; no spike fired",
        baseline=BaselineSummary(probes=5, ok=1, outcomes={"ok": 1, "refused": 4}, latency=None),
        spike=None,
        recovery=None,
        prober=ProberReport(saturated=False, loop_lag_p99=None, cpu_percent=None, rss_bytes=None),
        errors=(ErrorGroup(Outcome.REFUSED, 4, "connection refused", Phase.BASELINE),),
    )
    assert format_summary(result).splitlines() == [
        "avalanche → chat-staging: TARGET_DOWN in 12.50s (run run-2)",
        "  only 1 of 5 baseline probes succeeded; no spike fired",
        "  baseline    1/5 ok, B = n/a",
        "  prober      loop lag p99 n/a, CPU n/a during the spike, RSS n/a",
        "  error       refused x4 (first in baseline): connection refused",
    ]


def test_run_that_did_not_recover() -> None:
    """A run without recovery says it did not recover within the timeout."""
    result = dataclasses.replace(
        finished_result(result=RunResultKind.FAILED),
        recovery=RecoverySummary(
            recovered=False,
            seconds=None,
            probes=240,
            outcomes={"ok": 200, "timeout": 40},
            good_limit=None,
            timeout=120.0,
        ),
    )
    lines = format_summary(result).splitlines()
    assert (
        "  recovery    did not recover within 120s "
        "(240 probes, good ≤ n/a: 200 ok, 40 timeout)" in lines
    )
    assert not any("recovered after" in line for line in lines)


def test_spike_with_nothing_attempted() -> None:
    """A spike without attempts shows none, no success share, and n/a timings."""
    result = dataclasses.replace(
        finished_result(result=RunResultKind.ABORTED),
        spike=SpikeSummary(
            attempted=0,
            outcomes={},
            handshake=None,
            first_message=None,
            message_rtt=None,
            start_lateness=None,
        ),
    )
    lines = format_summary(result).splitlines()
    assert lines[0].startswith("avalanche → chat-staging: ABORTED ")
    assert "  spike       0 attempted: none" in lines
    assert "  handshake   n/a" in lines
    assert "  lateness    n/a" in lines
    assert not any(line.startswith(("  welcome", "  echo rtt")) for line in lines)


def test_invalid_run_shows_saturated() -> None:
    """An invalid run's prober line ends with SATURATED."""
    result = dataclasses.replace(
        finished_result(result=RunResultKind.INVALID),
        prober=ProberReport(
            saturated=True,
            loop_lag_p99=0.25,
            cpu_percent=99.6,
            rss_bytes=80_000_000,
            reasons=("event-loop lag p99 250.0ms > 100ms",),
        ),
    )
    lines = format_summary(result).splitlines()
    assert lines[0].startswith("avalanche → chat-staging: INVALID ")
    assert lines[-1] == (
        "  prober      loop lag p99 250.00 ms, CPU 100% during the spike, RSS 80 MB — SATURATED"
    )


def test_unsaturated_run_does_not_say_saturated() -> None:
    """A run within the prober's limits never mentions saturation."""
    assert "SATURATED" not in format_summary(finished_result())
