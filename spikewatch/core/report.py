"""Build a run's result from the records of its phases: summaries, verdict, why, timeline."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, RunResultKind
from spikewatch.core.phases import (
    ProberHealth,
    RecoveryPhase,
    RunRecord,
    SpikePhase,
    StablePhase,
)
from spikewatch.core.result import (
    BaselineSummary,
    ChurnSummary,
    ProberReport,
    RecoverySummary,
    RunResult,
    SpikeSummary,
    StableSummary,
    achieved_start_rate,
    count_deflate_declined,
    count_outcomes,
    count_upgrade_statuses,
    group_errors,
)
from spikewatch.core.saturation import (
    ProberLimits,
    descriptor_starvation,
    judge_one_process,
    judge_prober,
    lost_to_prober,
    receive_starvation,
)
from spikewatch.core.stats import summarize
from spikewatch.core.timeline import (
    BATCHES_KEPT,
    DROPS_KEPT,
    PROBES_KEPT,
    SAMPLE_KEPT,
    LatencyHistogram,
    ProbePoint,
    RunTimeline,
)
from spikewatch.core.verdict import (
    Measurements,
    ThresholdCheck,
    ThresholdLimits,
    decide_result,
    evaluate_thresholds,
)


def build_run_result(
    record: RunRecord, thresholds: ThresholdLimits, limits: ProberLimits
) -> RunResult:
    """Return the result of the run ``record`` describes, judged by the scenario's limits.

    A run that failed itself (``record.error``) is ``error`` with that message and no
    threshold checks; otherwise the verdict is the core's (:func:`decide_result`) and the
    message says why it is not ``passed``.
    """
    baseline = record.baseline
    spike = spike_summary(record.spike)
    stable = stable_summary(record.stable)
    recovery = recovery_summary(record.recovery)
    prober = prober_report(record, limits, spike)
    dropped = record.stable.dropped if record.stable is not None else 0
    checks: tuple[ThresholdCheck, ...] = ()
    if record.error is not None:
        kind, message = RunResultKind.ERROR, record.error
    else:
        if spike is not None:
            checks = evaluate_thresholds(thresholds, _measurements(spike, recovery, dropped))
        kind = decide_result(
            target_down=baseline.decision.target_down,
            aborted=record.spike is not None and record.spike.aborted,
            invalid=prober.saturated,
            checks=checks,
        )
        message = explain(kind, checks, prober)
    everything = record.attempts()
    return RunResult(
        id=record.id,
        target=record.target,
        scenario=record.scenario,
        result=kind,
        started_at=record.started_at,
        duration=record.duration,
        baseline=BaselineSummary(
            probes=baseline.decision.probes,
            ok=baseline.decision.ok,
            outcomes=count_outcomes(baseline.attempts),
            latency=baseline.decision.latency,
        ),
        spike=spike,
        stable=stable,
        recovery=recovery,
        thresholds=checks,
        prober=prober,
        errors=group_errors(everything),
        message=message,
        upgrade_statuses=count_upgrade_statuses(everything),
        timeline=dict(record.timeline),
        trace=build_timeline(record),
        deflate_declined=count_deflate_declined(everything),
        target_version=record.version.value if record.version is not None else None,
        target_version_reason=record.version.reason if record.version is not None else None,
    )


def spike_summary(spike: SpikePhase | None) -> SpikeSummary | None:
    """Summarize the spike; None when none was fired (or it was cut short before)."""
    if spike is None or not spike.attempts:
        return None
    return SpikeSummary.from_attempts(
        spike.attempts,
        aborted=spike.aborted,
        held_dropped=spike.held_dropped,
        held_drop_example=spike.held_drop_example,
        held_lost_to_prober=spike.held_lost_to_prober,
        churn=churn_summary(spike),
    )


def churn_summary(spike: SpikePhase) -> ChurnSummary | None:
    """Summarize a churn's pace; None for a spike or a ramp."""
    churn = spike.churn
    if churn is None:
        return None
    starts = (a.started for a in spike.attempts if a.started is not None)
    return ChurnSummary(
        rate=churn.rate,
        duration=churn.duration,
        achieved_rate=achieved_start_rate(churn.started, starts, churn.rate),
        max_in_flight=churn.max_in_flight,
        peak_in_flight=churn.peak_in_flight,
    )


def stable_summary(stable: StablePhase | None) -> StableSummary | None:
    """Summarize the stable connections; None when none were opened."""
    if stable is None or not stable.attempts:
        return None
    return StableSummary(
        connections=stable.connections,
        opened=sum(1 for a in stable.attempts if a.outcome == Outcome.OK),
        dropped=stable.dropped,
        outcomes=count_outcomes(stable.attempts),
        message_rtt=summarize(stable.rtts),
        drop_example=stable.drop_example,
        unanswered=stable.unanswered,
        lost_to_prober=stable.lost_to_prober,
    )


def recovery_summary(recovery: RecoveryPhase | None) -> RecoverySummary | None:
    """Summarize recovery; None when it never began (or was cut short before its first probe)."""
    if recovery is None or (recovery.decision is None and not recovery.attempts):
        return None
    decision = recovery.decision
    return RecoverySummary(
        recovered=decision is not None and decision.state == "recovered",
        seconds=decision.seconds if decision is not None else None,
        probes=len(recovery.attempts),
        outcomes=count_outcomes(recovery.attempts),
        good_limit=recovery.good_limit,
        timeout=recovery.timeout,
    )


def prober_report(
    record: RunRecord, limits: ProberLimits, spike: SpikeSummary | None
) -> ProberReport:
    """Judge the prober's health over the spike, and any attempt it starved of descriptors."""
    health = record.prober
    if not health.over_spike:
        report = ProberReport(False, None, None, health.daemon.rss_bytes)
    elif health.workers is not None:
        report = judge_prober(limits, health.daemon, health.workers)
    else:
        lateness = spike.start_lateness if spike is not None else None
        report = judge_one_process(limits, health.daemon, lateness.p99 if lateness else None)
    reasons = list(stalled_phases(health, limits))
    attempts = record.attempts()
    stable = record.stable
    starved = (
        descriptor_starvation(attempts),
        receive_starvation(attempts),
        lost_to_prober(
            stable.lost_to_prober if stable is not None else 0,
            record.spike.held_lost_to_prober if record.spike is not None else 0,
        ),
    )
    reasons.extend(reason for reason in starved if reason is not None)
    if not reasons:
        return report
    return dataclasses.replace(report, saturated=True, reasons=(*report.reasons, *reasons))


def stalled_phases(health: ProberHealth, limits: ProberLimits) -> Iterator[str]:
    """Say which phases besides the spike were measured while the prober's loop stalled."""
    limit = limits.max_loop_lag_p99
    for phase in health.phases:
        lag = phase.loop_lag_p99
        if lag is not None and lag > limit:
            yield (
                f"{phase.phase}: event-loop lag p99 {lag * 1000:.1f}ms > {limit * 1000:g}ms "
                "while it measured the target"
            )


def _measurements(
    spike: SpikeSummary, recovery: RecoverySummary | None, dropped: int
) -> Measurements:
    return Measurements(
        success_ratio=spike.success_ratio,
        handshake_p95=spike.handshake.p95 if spike.handshake else None,
        first_message_p95=spike.first_message.p95 if spike.first_message else None,
        message_rtt_p95=spike.message_rtt.p95 if spike.message_rtt else None,
        recovered=recovery is not None and recovery.recovered,
        recovery_seconds=recovery.seconds if recovery else None,
        dropped_stable=dropped,
        dropped_held=spike.held_dropped,
    )


def explain(kind: RunResultKind, checks: tuple[ThresholdCheck, ...], prober: ProberReport) -> str:
    """Return the run's ``message``: why it is not ``passed`` (empty when it is)."""
    if kind == RunResultKind.INVALID:
        return "prober saturated: " + "; ".join(prober.reasons)
    if kind == RunResultKind.TARGET_DOWN:
        return "fewer than half of the baseline probes succeeded"
    if kind == RunResultKind.ABORTED:
        return "the spike was stopped by the abort rule"
    failed = [c.name for c in checks if not c.passed]
    return ("missed: " + ", ".join(failed)) if failed else ""


# -- the run's timeline (core/timeline.py holds its types and bounds) -----------------


def _start(attempt: Attempt) -> float | None:
    # A recovery probe's start is its slot (the contract's); others have only a start.
    return attempt.planned if attempt.planned is not None else attempt.started


def _probe_points(attempts: Sequence[Attempt], phase: str, origin: float) -> list[ProbePoint]:
    points = []
    for attempt in attempts:
        start = _start(attempt)
        if start is None or attempt.outcome is None:
            continue
        ok = attempt.outcome == Outcome.OK
        latency = attempt.latency if ok else None
        points.append(ProbePoint(phase, start - origin, latency, attempt.outcome.value))
    return points


def _kept(points: list[ProbePoint]) -> tuple[list[ProbePoint], int]:
    if len(points) <= PROBES_KEPT:
        return points, 0
    half = PROBES_KEPT // 2
    return points[:half] + points[-half:], len(points) - PROBES_KEPT


def _strided(values: Sequence[tuple[float, float]], cap: int) -> tuple[tuple[float, float], ...]:
    step = max(1, math.ceil(len(values) / cap))
    return tuple(values[::step])


def build_timeline(record: RunRecord) -> RunTimeline:
    """Return the run's timeline from its record (instants since ``record.origin``)."""
    origin = record.origin
    baseline, left_b = _kept(_probe_points(record.baseline.attempts, "baseline", origin))
    recovery_attempts = record.recovery.attempts if record.recovery else ()
    recovery, left_r = _kept(_probe_points(recovery_attempts, "recovery", origin))
    spike = record.spike.attempts if record.spike else ()
    starts = sorted({p - origin for a in spike if (p := a.planned) is not None})
    measured = [
        (start - origin, a.handshake)
        for a in spike
        if (start := a.started if a.started is not None else a.planned) is not None
        and a.handshake is not None
    ]
    failed = sum(1 for a in spike if a.outcome not in (None, Outcome.OK, Outcome.ABORTED))
    decision = record.recovery.decision if record.recovery else None
    recovered = decision.recovered_at if decision is not None else None
    stable = record.stable
    drops = sorted(d - origin for d in stable.drops) if stable is not None else []
    return RunTimeline(
        probes=(*baseline, *recovery),
        probes_left_out=left_b + left_r,
        batch_starts=tuple(starts[:BATCHES_KEPT]),
        batches=len(starts),
        t0=record.timeline.get("t0"),
        recovered_at=None if recovered is None else recovered - origin,
        good_limit=record.recovery.good_limit if record.recovery else None,
        stable_drops=tuple(drops[:DROPS_KEPT]),
        stable_dropped=stable.dropped if stable is not None else 0,
        keepalive=summarize(stable.rtts) if stable is not None else None,
        handshake=LatencyHistogram.of(h for _, h in measured) if measured else None,
        handshake_sample=_strided(measured, SAMPLE_KEPT),
        handshake_measured=len(measured),
        handshake_failed=failed,
    )
