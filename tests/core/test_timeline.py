"""Tests for spikewatch.core.timeline: a run's timeline from hand-built records, no I/O."""

from __future__ import annotations

import json

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import (
    BaselinePhase,
    ProberHealth,
    RecoveryPhase,
    RunRecord,
    SpikePhase,
    StablePhase,
)
from spikewatch.core.recovery import RecoveryDecision, decide_baseline
from spikewatch.core.report import build_timeline
from spikewatch.core.timeline import (
    BATCHES_KEPT,
    DROPS_KEPT,
    HANDSHAKE_EDGES,
    MAX_JSON_BYTES,
    PROBES_KEPT,
    SAMPLE_KEPT,
    LatencyHistogram,
)
from tests.core.fakes import Health

ORIGIN = 1000.0
CALM = Health(loop_lag_p99=0.001, cpu_percent=10.0, cpu_window=2.0, rss_bytes=1)


def probe(phase: Phase, at: float, latency: float | None, *, slot: bool = False) -> Attempt:
    """A probe started ``at`` seconds into the run: ok with ``latency``, or refused (None)."""
    attempt = Attempt(phase, 0, planned=ORIGIN + at if slot else None, started=ORIGIN + at + 0.001)
    if latency is None:
        attempt.decide(Outcome.REFUSED, "refused", ORIGIN + at + 0.002, "connect")
    else:
        attempt.latency = latency
        attempt.decide(Outcome.OK, "", ORIGIN + at + latency)
    return attempt


def spiked(at: float, handshake: float | None, outcome: Outcome = Outcome.OK) -> Attempt:
    """A spike attempt planned ``at`` seconds in, started 1 ms late."""
    attempt = Attempt(Phase.SPIKE, 0, planned=ORIGIN + at, started=ORIGIN + at + 0.001)
    attempt.handshake = handshake
    attempt.decide(outcome, "", ORIGIN + at + 0.5)
    return attempt


def record(
    *,
    baseline: tuple[Attempt, ...] = (),
    spike: tuple[Attempt, ...] = (),
    recovery: tuple[Attempt, ...] = (),
    stable: StablePhase | None = None,
    recovered_at: float | None = None,
) -> RunRecord:
    """A run record whose monotonic clock started at ORIGIN."""
    decision = (
        RecoveryDecision("recovered", ORIGIN + recovered_at, 1.0, 1, 1, 1)
        if recovered_at is not None
        else RecoveryDecision("not_recovered", None, None, 1, 1, 0)
    )
    return RunRecord(
        id="r",
        target="t",
        scenario="s",
        started_at=0.0,
        duration=1.0,
        baseline=BaselinePhase(baseline, decide_baseline(max(1, len(baseline)), [0.01])),
        stable=stable,
        spike=SpikePhase(spike) if spike else None,
        recovery=RecoveryPhase(recovery, decision, 0.025, 5.0) if recovery else None,
        prober=ProberHealth(CALM, over_spike=False),
        timeline={"t0": 3.0},
        origin=ORIGIN,
    )


def test_probes_are_kept_with_their_start_since_the_run_began_and_failures_without_latency() -> (
    None
):
    """Baseline probes start at their start, recovery probes at their slot; a failed one has
    no latency but its outcome."""
    never = Attempt(Phase.BASELINE, 9)  # cut short before it started: left out
    run = record(
        baseline=(probe(Phase.BASELINE, 0.0, 0.01), probe(Phase.BASELINE, 0.5, None), never),
        recovery=(probe(Phase.RECOVERY, 3.0, 0.02, slot=True),),
        recovered_at=3.0,
    )
    doc = build_timeline(run).as_dict()
    assert doc["probes"] == [
        {"phase": "baseline", "at": 0.001, "latency": 0.01, "outcome": "ok"},
        {"phase": "baseline", "at": 0.501, "latency": None, "outcome": "refused"},
        {"phase": "recovery", "at": 3.0, "latency": 0.02, "outcome": "ok"},
    ]
    assert (doc["t0"], doc["recovered_at"], doc["good_latency_limit_seconds"]) == (3.0, 3.0, 0.025)


def test_a_run_without_spike_or_recovery_has_an_empty_timeline() -> None:
    """A target down at baseline: its probes, and no batches, T0 limit or handshakes."""
    doc = build_timeline(record(baseline=(probe(Phase.BASELINE, 0.0, None),))).as_dict()
    assert doc["batches"] == 0
    assert doc["recovered_at"] is None
    assert doc["good_latency_limit_seconds"] is None
    assert doc["spike_handshake"] == {"measured": 0, "failed": 0, "histogram": None, "sample": []}
    assert doc["stable"] == {"dropped": 0, "drops_at": [], "keepalive_rtt_seconds": None}


def test_the_spike_gives_batch_starts_a_histogram_and_its_failures() -> None:
    """Batch starts are the distinct planned instants; failures count, aborted ones do not."""
    spike = (
        spiked(1.0, 0.0015),
        spiked(1.0, 0.003),
        spiked(2.0, 0.7),
        spiked(2.0, None, Outcome.TIMEOUT),
        spiked(2.0, None, Outcome.ABORTED),
    )
    doc = build_timeline(record(spike=spike)).as_dict()
    assert doc["batch_starts"] == [1.0, 2.0]
    hs = doc["spike_handshake"]
    assert (hs["measured"], hs["failed"]) == (3, 1)
    counts = hs["histogram"]["counts"]
    assert counts[HANDSHAKE_EDGES.index(0.002)] == 1
    assert counts[HANDSHAKE_EDGES.index(0.005)] == 1
    assert counts[HANDSHAKE_EDGES.index(1.0)] == 1
    assert hs["sample"] == [[1.001, 0.0015], [1.001, 0.003], [2.001, 0.7]]


def test_the_histogram_puts_a_value_on_an_edge_in_that_bucket_and_overflow_last() -> None:
    """≤ an edge is that edge's bucket; above the last edge is the extra last bucket."""
    histogram = LatencyHistogram.of([0.0, 0.001, 0.0011, 61.0], edges=(0.001, 0.01))
    assert histogram.counts == (2, 1, 1)


def test_stable_drops_and_keepalive_round_trips_are_summarised() -> None:
    """Drops keep their instants since the start (sorted); keepalive round trips a summary."""
    stable = StablePhase(
        connections=3,
        attempts=(),
        rtts=(0.001, 0.002, 0.003),
        dropped=2,
        drops=(ORIGIN + 4.0, ORIGIN + 2.5),
    )
    doc = build_timeline(record(stable=stable)).as_dict()["stable"]
    assert doc["dropped"] == 2
    assert doc["drops_at"] == [2.5, 4.0]
    assert doc["keepalive_rtt_seconds"] == {
        "count": 3, "p50": 0.002, "p95": 0.0029, "p99": 0.00298, "max": 0.003,
    }  # fmt: skip


def test_the_timeline_is_bounded_whatever_the_run() -> None:
    """Thousands of probes, batches, drops and handshakes stay within the documented bounds."""
    many = 5000
    run = record(
        baseline=tuple(probe(Phase.BASELINE, i * 0.01, 0.01) for i in range(many)),
        recovery=tuple(probe(Phase.RECOVERY, 60 + i * 0.01, None, slot=True) for i in range(many)),
        spike=tuple(spiked(i * 0.001, 0.001 * (i % 50)) for i in range(many * 4)),
        stable=StablePhase(3, (), tuple([0.001] * many), many, drops=tuple([ORIGIN] * many)),
    )
    timeline = build_timeline(run)
    doc = timeline.as_dict()
    assert len(doc["probes"]) == 2 * PROBES_KEPT
    assert doc["probes_left_out"] == 2 * (many - PROBES_KEPT)
    # The first and last halves: the recovery's first and last probes are both there.
    recovery = [p["at"] for p in doc["probes"] if p["phase"] == "recovery"]
    assert (recovery[0], recovery[-1]) == (60.0, round(60 + (many - 1) * 0.01, 6))
    assert len(doc["batch_starts"]) == BATCHES_KEPT
    assert doc["batches"] == many * 4
    assert len(doc["stable"]["drops_at"]) == DROPS_KEPT
    assert len(doc["spike_handshake"]["sample"]) <= SAMPLE_KEPT
    assert doc["spike_handshake"]["measured"] == many * 4
    assert sum(doc["spike_handshake"]["histogram"]["counts"]) == many * 4
    assert len(json.dumps(doc, separators=(",", ":"))) < MAX_JSON_BYTES
