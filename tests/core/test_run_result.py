"""Tests for spikewatch.core.report: a run's result from hand-built phase records, no I/O."""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

import pytest

from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import descriptor_error
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.core.phases import (
    BaselinePhase,
    PhaseLag,
    ProberHealth,
    RecoveryPhase,
    RunRecord,
    SpikePhase,
    StablePhase,
)
from spikewatch.core.recovery import RecoveryDecision, decide_baseline
from spikewatch.core.report import build_run_result, explain
from spikewatch.core.result import ProberReport, RunResult
from spikewatch.core.saturation import ProberLimits, WorkerShare
from spikewatch.core.timeline import HANDSHAKE_EDGES
from spikewatch.core.verdict import ThresholdCheck, ThresholdLimits
from spikewatch.protocol.receive_budget import explain as explain_budget
from tests.core.fakes import Health

LIMITS = ProberLimits(max_loop_lag_p99=0.1, max_start_lateness_p99=0.25, max_cpu_percent=95.0)
THRESHOLDS = ThresholdLimits(success_ratio=0.9, handshake_p95=0.5)
CALM = Health(loop_lag_p99=0.001, cpu_percent=10.0, cpu_window=2.0, rss_bytes=50_000_000)
EMFILE = descriptor_error(OSError(errno.EMFILE, "Too many open files"))
T0 = 20.0


def ok(phase: Phase, conn: int, planned: float | None = None, late: float = 0.0005) -> Attempt:
    """A successful attempt ``late`` after its plan: 2 ms handshake, 1 ms welcome, 3 ms echo."""
    start = 10.0 if planned is None else planned + late
    return Attempt(
        phase,
        conn,
        planned=planned,
        started=start,
        ended=start + 0.01,
        outcome=Outcome.OK,
        handshake=0.002,
        first_message=0.001,
        rtt=0.003,
        latency=0.01,
    )


def failed(
    phase: Phase, conn: int, outcome: Outcome, detail: str, status: int | None = None
) -> Attempt:
    """An attempt that failed with ``outcome``."""
    return Attempt(
        phase, conn, started=10.0, ended=10.5, outcome=outcome, detail=detail, status=status
    )


def baseline(good: int = 3, probes: int = 3) -> BaselinePhase:
    """A baseline of ``probes`` probes of which ``good`` succeeded, the rest refused."""
    attempts = [ok(Phase.BASELINE, n) for n in range(good)]
    attempts += [failed(Phase.BASELINE, n, Outcome.REFUSED, "refused") for n in range(good, probes)]
    return BaselinePhase(tuple(attempts), decide_baseline(probes, [0.01] * good))


def spike(good: int = 10, bad: int = 0, *, aborted: bool = False) -> SpikePhase:
    """A spike of ``good`` successes then ``bad`` timeouts, all planned at 15 s."""
    attempts = [ok(Phase.SPIKE, 100 + n, planned=15.0) for n in range(good)]
    attempts += [failed(Phase.SPIKE, 200 + n, Outcome.TIMEOUT, "no answer") for n in range(bad)]
    return SpikePhase(tuple(attempts), aborted=aborted)


def decided(seconds: float | None) -> RecoveryDecision:
    """Recovery decided: recovered after ``seconds``, or (None) not within the timeout."""
    if seconds is None:
        return RecoveryDecision("not_recovered", None, None, 5, 5, 0)
    return RecoveryDecision("recovered", T0 + seconds, seconds, 3, 3, 3)


def recovery(seconds: float | None = 0.2, probes: int = 3) -> RecoveryPhase:
    """Recovery probes from T0 and their decision."""
    attempts = tuple(ok(Phase.RECOVERY, 300 + n, planned=T0 + n * 0.1) for n in range(probes))
    return RecoveryPhase(attempts, decided(seconds), good_limit=0.025, timeout=5.0)


def record(**changes: Any) -> RunRecord:
    """A calm run that passes; ``changes`` replace its fields."""
    run = RunRecord(
        id="0123456789abcdef",
        target="chat",
        scenario="burst",
        started_at=1_700_000_000.25,
        duration=2.5,
        baseline=baseline(),
        stable=None,
        spike=spike(),
        recovery=recovery(),
        prober=ProberHealth(CALM, over_spike=True),
        timeline={"baseline_start": 0.0, "spike_start": 0.5, "t0": 0.7},
    )
    return dataclasses.replace(run, **changes)


def build(run: RunRecord, thresholds: ThresholdLimits = THRESHOLDS) -> RunResult:
    return build_run_result(run, thresholds, LIMITS)


def test_the_json_of_a_passed_run_is_the_contracts() -> None:
    """A calm run that met every threshold passes; its whole JSON, field by field."""
    result = build(record())
    assert result.passed
    assert result.as_dict() == {
        "id": "0123456789abcdef",
        "target": "chat",
        "scenario": "burst",
        "target_version": None,
        "result": "passed",
        "message": "",
        "started_at": "2023-11-14T22:13:20.250Z",
        "duration_seconds": 2.5,
        "baseline": {"probes": 3, "ok": 3, "outcomes": {"ok": 3}, "latency_seconds": 0.01},
        "spike": {
            "attempted": 10,
            "outcomes": {"ok": 10},
            "success_ratio": 1.0,
            "aborted": False,
            "handshake_seconds": {"p50": 0.002, "p95": 0.002, "p99": 0.002, "max": 0.002},
            "first_message_seconds": {"p50": 0.001, "p95": 0.001, "p99": 0.001, "max": 0.001},
            "message_rtt_seconds": {"p50": 0.003, "p95": 0.003, "p99": 0.003, "max": 0.003},
            "start_lateness_seconds": {"p50": 0.0005, "p99": 0.0005, "max": 0.0005},
            "held_dropped": 0,
            "held_drop_example": None,
            "held_lost_to_prober": 0,
        },
        "stable": None,
        "recovery": {
            "recovered": True,
            "seconds": 0.2,
            "probes": 3,
            "outcomes": {"ok": 3},
            "good_latency_limit_seconds": 0.025,
            "timeout_seconds": 5.0,
        },
        "thresholds": [
            {"name": "success_ratio", "limit": 0.9, "value": 1.0, "passed": True},
            {"name": "handshake_p95", "limit": 0.5, "value": 0.002, "passed": True},
            {"name": "recovered", "limit": 1.0, "value": 1.0, "passed": True},
        ],
        "prober": {
            "saturated": False,
            "loop_lag_p99_seconds": 0.001,
            "cpu_percent": 10.0,
            "rss_bytes": 50_000_000,
            "reasons": [],
        },
        "errors": [],
        "detail": {
            "upgrade_statuses": {},
            "timeline_seconds": {"baseline_start": 0.0, "spike_start": 0.5, "t0": 0.7},
            "timeline": {
                "probes": [
                    *({"phase": "baseline", "at": 10.0, "latency": 0.01, "outcome": "ok"},) * 3,
                    *(
                        {"phase": "recovery", "at": at, "latency": 0.01, "outcome": "ok"}
                        for at in (20.0, 20.1, 20.2)
                    ),
                ],
                "probes_left_out": 0,
                "batch_starts": [15.0],
                "batches": 1,
                "t0": 0.7,
                "recovered_at": 20.2,
                "good_latency_limit_seconds": 0.025,
                "stable": {"dropped": 0, "drops_at": [], "keepalive_rtt_seconds": None},
                "spike_handshake": {
                    "measured": 10,
                    "failed": 0,
                    "histogram": {
                        "edges_seconds": list(HANDSHAKE_EDGES),
                        "counts": [0, 0, 0, 0, 10] + [0] * 14,
                    },
                    "sample": [[15.0005, 0.002]] * 10,
                },
            },
        },
    }


def test_missed_thresholds_fail_and_are_named_in_the_message() -> None:
    """A spike under its success ratio fails, and the message names each missed check."""
    result = build(record(spike=spike(good=5, bad=5)))
    assert result.result == RunResultKind.FAILED
    assert result.message == "missed: success_ratio"
    assert [(c.name, c.passed) for c in result.thresholds] == [
        ("success_ratio", False),
        ("handshake_p95", True),
        ("recovered", True),
    ]
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 5, "timeout": 5}


def test_a_target_down_at_baseline_fires_nothing_and_says_why() -> None:
    """Fewer than half the baseline probes ok: target_down, no spike, checks or recovery."""
    rss_only = Health(loop_lag_p99=None, cpu_percent=None, cpu_window=0.0, rss_bytes=40_000)
    run = record(
        baseline=baseline(good=1),
        spike=None,
        recovery=None,
        prober=ProberHealth(rss_only, over_spike=False),
    )
    result = build(run)
    assert result.result == RunResultKind.TARGET_DOWN
    assert result.message == "fewer than half of the baseline probes succeeded"
    assert (result.spike, result.recovery, result.thresholds) == (None, None, ())
    assert result.baseline.outcomes == {"ok": 1, "refused": 2}
    assert result.baseline.latency is None
    assert result.prober == ProberReport(False, None, None, 40_000)


def test_a_spike_stopped_by_the_abort_rule_is_aborted() -> None:
    """A spike the abort rule stopped makes the run aborted, whatever its thresholds."""
    result = build(record(spike=spike(good=2, bad=8, aborted=True)))
    assert result.result == RunResultKind.ABORTED
    assert result.message == "the spike was stopped by the abort rule"
    assert result.as_dict()["spike"]["aborted"] is True


def test_a_saturated_prober_makes_the_run_invalid_with_its_reasons() -> None:
    """Loop lag and CPU past their limits: invalid, and the message gives both reasons."""
    busy = Health(loop_lag_p99=0.2, cpu_percent=99.0, cpu_window=1.5, rss_bytes=1)
    result = build(record(prober=ProberHealth(busy, over_spike=True)))
    assert result.result == RunResultKind.INVALID
    assert result.message == (
        "prober saturated: event-loop lag p99 200.0ms > 100ms; prober CPU 99% > 95% of a core"
    )
    assert result.prober.saturated
    assert (result.prober.loop_lag_p99, result.prober.cpu_percent) == (0.2, 99.0)
    assert all(check.passed for check in result.thresholds)


def test_a_late_spike_start_makes_a_lone_prober_invalid() -> None:
    """Fired from the daemon's loop, the spike's own start lateness p99 is judged."""
    late = [ok(Phase.SPIKE, n, planned=15.0, late=0.3) for n in range(4)]
    result = build(record(spike=SpikePhase(tuple(late))))
    assert result.result == RunResultKind.INVALID
    assert result.prober.reasons == ("spike start lateness p99 300.0ms > 250ms",)


def test_a_short_cpu_window_is_shown_but_not_judged() -> None:
    """CPU measured over less than a second is reported, and does not make a run invalid."""
    brief = Health(loop_lag_p99=0.002, cpu_percent=100.0, cpu_window=0.3, rss_bytes=7)
    result = build(record(prober=ProberHealth(brief, over_spike=True)))
    assert result.passed
    assert result.prober == ProberReport(False, 0.002, 100.0, 7)


def test_baseline_probes_without_a_descriptor_make_the_run_invalid_not_target_down() -> None:
    """EMFILE at baseline is the prober's limit: invalid, with how many attempts hit it."""
    assert EMFILE is not None
    starved = tuple(failed(Phase.BASELINE, n, Outcome.ERROR, EMFILE) for n in range(3))
    run = record(
        baseline=BaselinePhase(starved, decide_baseline(3, [])),
        spike=None,
        recovery=None,
        prober=ProberHealth(CALM, over_spike=False),
    )
    result = build(run)
    assert result.result == RunResultKind.INVALID
    assert result.message.startswith(
        "prober saturated: 3 attempt(s) found no file descriptor (EMFILE/ENFILE)"
    )
    assert result.errors[0].as_dict() == {
        "outcome": "error",
        "count": 3,
        "example": EMFILE,
        "phase": "baseline",
        "step": None,
    }


def test_attempts_starved_in_any_phase_add_one_reason_after_the_others() -> None:
    """Starved spike and recovery attempts are counted together, after the health reasons."""
    assert EMFILE is not None
    spiked = (*spike(good=9).attempts, failed(Phase.SPIKE, 250, Outcome.ERROR, EMFILE))
    probes = (*recovery().attempts, failed(Phase.RECOVERY, 350, Outcome.ERROR, EMFILE))
    busy = Health(loop_lag_p99=0.2, cpu_percent=None, cpu_window=0.0, rss_bytes=1)
    run = record(
        spike=SpikePhase(spiked),
        recovery=dataclasses.replace(recovery(), attempts=probes),
        prober=ProberHealth(busy, over_spike=True),
    )
    reasons = build(run).prober.reasons
    assert len(reasons) == 2
    assert reasons[0] == "event-loop lag p99 200.0ms > 100ms"
    assert reasons[1].startswith("2 attempt(s) found no file descriptor")


def test_workers_are_judged_each_and_their_memory_summed() -> None:
    """Over workers, one that fired a share but sent no health makes the run invalid."""
    calm_worker = Health(loop_lag_p99=0.004, cpu_percent=40.0, cpu_window=2.0, rss_bytes=3)
    shares = spike().attempts
    workers = (WorkerShare(calm_worker, shares[:5]), WorkerShare(None, shares[5:]))
    result = build(record(prober=ProberHealth(CALM, over_spike=True, workers=workers)))
    assert result.result == RunResultKind.INVALID
    assert result.message == "prober saturated: worker 1: no health report"
    assert result.prober.loop_lag_p99 == 0.004
    assert result.prober.cpu_percent == 40.0
    assert result.prober.rss_bytes == 50_000_003


def test_a_run_that_failed_itself_is_an_error_with_its_message_and_no_checks() -> None:
    """A run's own failure is error, before any verdict; what it measured is still shown."""
    busy = Health(loop_lag_p99=0.2, cpu_percent=None, cpu_window=0.0, rss_bytes=1)
    run = record(
        error="run exceeded its deadline of 5s", prober=ProberHealth(busy, over_spike=True)
    )
    result = build(run)
    assert result.result == RunResultKind.ERROR
    assert result.message == "run exceeded its deadline of 5s"
    assert result.thresholds == ()
    assert result.spike is not None
    assert result.prober.saturated


def test_an_empty_error_message_is_still_an_error() -> None:
    """An error whose cause has no text is still error (the record's None means none)."""
    result = build(record(error=""))
    assert (result.result, result.message) == (RunResultKind.ERROR, "")


def test_a_target_that_did_not_recover_fails_on_the_implicit_check() -> None:
    """Not recovered within the timeout: failed on ``recovered``, with no seconds."""
    result = build(record(recovery=recovery(seconds=None, probes=5)))
    assert result.result == RunResultKind.FAILED
    assert result.message == "missed: recovered"
    assert result.recovery is not None
    assert result.as_dict()["recovery"]["recovered"] is False
    assert result.as_dict()["recovery"]["seconds"] is None
    assert result.recovery.probes == 5


def test_a_slow_recovery_misses_its_threshold() -> None:
    """Recovered, but later than the recovery threshold: failed on ``recovery`` alone."""
    result = build(record(recovery=recovery(seconds=0.4)), ThresholdLimits(recovery=0.3))
    assert result.message == "missed: recovery"
    assert result.thresholds[0] == ThresholdCheck("recovery", 0.3, 0.4, passed=False)


def test_a_recovery_cut_short_reports_its_probes_as_not_recovered() -> None:
    """Recovery stopped before its decision: its probes are shown, recovered false."""
    cut = dataclasses.replace(recovery(), decision=None)
    result = build(record(recovery=cut, error="run exceeded its deadline of 5s"))
    assert result.recovery is not None
    assert (result.recovery.recovered, result.recovery.seconds) == (False, None)
    assert result.recovery.probes == 3


def test_phases_cut_short_before_their_first_attempt_are_left_out() -> None:
    """A spike or recovery that made no attempt (nor a decision) shows as null."""
    empty_recovery = RecoveryPhase((), None, good_limit=0.025, timeout=5.0)
    result = build(record(spike=SpikePhase(()), recovery=empty_recovery, error="stopped"))
    assert (result.spike, result.recovery) == (None, None)


def test_stable_connections_are_summarized_and_their_drops_checked() -> None:
    """Opened, dropped, echo round trips and one drop's reason; a drop past 0 fails."""
    attempts = (
        *(ok(Phase.STABLE, n) for n in range(3)),
        failed(Phase.STABLE, 3, Outcome.REFUSED, "refused"),
    )
    stable = StablePhase(4, attempts, rtts=(0.001, 0.002), dropped=1, drop_example="peer closed")
    result = build(record(stable=stable), ThresholdLimits(dropped_stable=0))
    assert result.result == RunResultKind.FAILED
    assert result.message == "missed: dropped_stable"
    assert result.as_dict()["stable"] == {
        "connections": 4,
        "opened": 3,
        "dropped": 1,
        "outcomes": {"ok": 3, "refused": 1},
        "message_rtt_seconds": {"p50": 0.0015, "p95": 0.00195, "p99": 0.00199, "max": 0.002},
        "drop_example": "peer closed",
        "unanswered_at_end": 0,
        "lost_to_prober": 0,
    }


def test_stable_connections_lost_to_the_probers_budget_make_the_run_invalid() -> None:
    """Counted apart from drops (dropped_stable: 0 passes), named in the self-check: invalid."""
    attempts = tuple(ok(Phase.STABLE, n) for n in range(3))
    stable = StablePhase(3, attempts, rtts=(0.001,), dropped=0, lost_to_prober=2)
    result = build(record(stable=stable), ThresholdLimits(dropped_stable=0))
    assert result.result == RunResultKind.INVALID
    assert [c.passed for c in result.thresholds if c.name == "dropped_stable"] == [True]
    assert result.prober.reasons == (
        "2 stable connection(s) lost to the prober's receive buffers "
        "(limits.max_receive_buffer_bytes): its own limit, not dropped by the target",
    )
    assert result.message == "prober saturated: " + result.prober.reasons[0]
    assert result.as_dict()["stable"]["lost_to_prober"] == 2
    assert result.trace is not None
    assert (result.as_dict()["stable"]["dropped"], result.trace.stable_dropped) == (0, 0)


def test_errors_and_upgrade_statuses_are_gathered_across_phases() -> None:
    """Failures of every phase are grouped by outcome with a first example; statuses counted."""
    rejected = failed(Phase.SPIKE, 201, Outcome.HTTP_STATUS, "HTTP 503", status=503)
    teapot = failed(Phase.SPIKE, 202, Outcome.HTTP_STATUS, "HTTP 418", status=418)
    run = record(spike=SpikePhase((*spike(good=8).attempts, rejected, teapot)))
    run = dataclasses.replace(run, baseline=baseline(good=2))
    result = build(run)
    assert [e.as_dict() for e in result.errors] == [
        {"outcome": "refused", "count": 1, "example": "refused", "phase": "baseline", "step": None},
        {
            "outcome": "http_status",
            "count": 2,
            "example": "HTTP 503",
            "phase": "spike",
            "step": None,
        },
    ]
    assert result.upgrade_statuses == {"503": 1, "other": 1}


def test_the_record_lists_every_attempt_phase_by_phase() -> None:
    """attempts() runs baseline, stable, spike, recovery, in each phase's order."""
    stable = StablePhase(1, (ok(Phase.STABLE, 50),), rtts=(), dropped=0)
    phases = [a.phase for a in record(stable=stable).attempts()]
    assert (
        phases == [Phase.BASELINE] * 3 + [Phase.STABLE] + [Phase.SPIKE] * 10 + [Phase.RECOVERY] * 3
    )


@pytest.mark.parametrize(
    ("kind", "failed_checks", "message"),
    [
        (RunResultKind.PASSED, (), ""),
        (RunResultKind.FAILED, ("handshake_p95", "recovered"), "missed: handshake_p95, recovered"),
        (RunResultKind.TARGET_DOWN, (), "fewer than half of the baseline probes succeeded"),
        (RunResultKind.ABORTED, (), "the spike was stopped by the abort rule"),
        (RunResultKind.INVALID, (), "prober saturated: lag; CPU"),
    ],
)
def test_each_result_explains_itself(
    kind: RunResultKind, failed_checks: tuple[str, ...], message: str
) -> None:
    """The message says why a run is not passed, in one line per kind."""
    checks = tuple(ThresholdCheck(name, 1.0, 2.0, passed=False) for name in failed_checks)
    prober = ProberReport(True, None, None, 1, reasons=("lag", "CPU"))
    assert explain(kind, (ThresholdCheck("ok", 1.0, 1.0, passed=True), *checks), prober) == message


def test_a_baseline_measured_while_the_loop_stalled_makes_the_run_invalid() -> None:
    """Loop lag past the limit over the baseline fakes B: the run is invalid, naming it."""
    stalled = ProberHealth(
        CALM,
        over_spike=True,
        phases=(PhaseLag("baseline", 1.644), PhaseLag("recovery", 0.002)),
    )
    result = build(record(prober=stalled))
    assert result.result == RunResultKind.INVALID
    assert result.prober.saturated
    assert result.prober.reasons == (
        "baseline: event-loop lag p99 1644.0ms > 100ms while it measured the target",
    )


def test_a_stalled_recovery_or_a_stalled_baseline_of_a_down_target_is_invalid() -> None:
    """Recovery is judged too; a stall outranks target_down (no spike was fired)."""
    result = build(record(prober=ProberHealth(CALM, True, phases=(PhaseLag("recovery", 0.5),))))
    assert result.result == RunResultKind.INVALID
    assert result.prober.reasons[0].startswith("recovery: event-loop lag p99 500.0ms")
    down = record(
        baseline=baseline(good=0),
        spike=None,
        recovery=None,
        prober=ProberHealth(CALM, over_spike=False, phases=(PhaseLag("baseline", 0.3),)),
    )
    assert build(down).result == RunResultKind.INVALID


def test_calm_phases_and_phases_without_samples_judge_nothing() -> None:
    """Lag within the limit, or no sample at all, leaves the run as it was."""
    calm = ProberHealth(
        CALM, over_spike=True, phases=(PhaseLag("baseline", 0.05), PhaseLag("recovery", None))
    )
    assert build(record(prober=calm)).result == RunResultKind.PASSED


def test_attempts_refused_by_the_receive_budget_make_the_run_invalid() -> None:
    """Out of receive buffer is the prober's limit: invalid, with how many it refused."""
    detail = explain_budget(1024 * 1024)
    refused = tuple(failed(Phase.SPIKE, 500 + n, Outcome.ERROR, detail) for n in range(4))
    result = build(record(spike=SpikePhase((*spike().attempts, *refused), aborted=False)))
    assert result.result == RunResultKind.INVALID
    assert result.prober.reasons == (
        "4 attempt(s) found the prober's receive buffers full: its own limit "
        "(limits.max_receive_buffer_bytes), not the target's",
    )


def test_timeouts_of_different_steps_are_separate_error_groups() -> None:
    """Timeouts before and after the upgrade are two groups, in step order, each with
    its own example: the JSON says which step timed out."""
    late_upgrade = failed(Phase.SPIKE, 400, Outcome.TIMEOUT, "no upgrade answer within 5s")
    late_echo = failed(Phase.SPIKE, 401, Outcome.TIMEOUT, "no echo answer within 2s")
    late_upgrade.step, late_echo.step = "upgrade", "echo"
    attempts = (*spike(good=8).attempts, late_echo, late_upgrade, late_upgrade)
    result = build(record(spike=SpikePhase(attempts, aborted=False)))
    assert [(e.outcome, e.step, e.count, e.example) for e in result.errors] == [
        (Outcome.TIMEOUT, "upgrade", 2, "no upgrade answer within 5s"),
        (Outcome.TIMEOUT, "echo", 1, "no echo answer within 2s"),
    ]
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 8, "timeout": 3}


def test_held_connections_the_target_dropped_are_reported_and_can_fail_the_run() -> None:
    """Drops of held spike connections are in the JSON; a dropped_held threshold judges them."""
    dropped = SpikePhase(
        spike().attempts, held_dropped=4, held_drop_example="the peer closed with code 1001"
    )
    result = build(record(spike=dropped))
    assert result.result == RunResultKind.PASSED, "reported, not judged, without a threshold"
    assert result.spike is not None
    spike_json = result.as_dict()["spike"]
    assert (spike_json["held_dropped"], spike_json["held_drop_example"]) == (
        4,
        "the peer closed with code 1001",
    )
    judged = build(record(spike=dropped), ThresholdLimits(dropped_held=0))
    assert judged.result == RunResultKind.FAILED
    assert judged.thresholds[0].as_dict() == {
        "name": "dropped_held",
        "limit": 0,
        "value": 4,
        "passed": False,
    }


def test_conversation_steps_group_after_the_known_steps_and_before_none() -> None:
    """A conversation's step names are groups of their own, after upgrade, before no step."""
    at_ack = failed(Phase.SPIKE, 400, Outcome.TIMEOUT, "no message for step 'ack' within 2s")
    at_next = failed(Phase.SPIKE, 401, Outcome.TIMEOUT, "no message for step 'next' within 2s")
    at_upgrade = failed(Phase.SPIKE, 402, Outcome.TIMEOUT, "no upgrade answer within 5s")
    nowhere = failed(Phase.SPIKE, 403, Outcome.TIMEOUT, "no step")
    at_ack.step, at_next.step, at_upgrade.step = "ack", "next", "upgrade"
    attempts = (*spike(good=2).attempts, nowhere, at_next, at_ack, at_upgrade, at_ack)
    result = build(record(spike=SpikePhase(attempts, aborted=False)))
    assert [(e.step, e.count) for e in result.errors] == [
        ("upgrade", 1),
        ("next", 1),
        ("ack", 2),
        (None, 1),
    ]
