"""Tests for spikewatch.engine.spike: when a sharded replica starts its spike, and the abort
tally (no sockets)."""

from __future__ import annotations

from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine.clock import now
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.spike import (
    SHARED_INSTANT_TOLERANCE,
    WORKER_LEAD,
    AbortTally,
    SpikeFiring,
)

SPIKE_AT = 1_700_000_000.0


def firing(late_by: float | None, said: list[str]) -> SpikeFiring:
    """A spike whose shared instant passed ``late_by`` seconds ago (None: not sharded)."""
    run = RunInFlight(said.append)
    run.begin()
    wall = SPIKE_AT + (late_by or 0.0)
    spike_at = None if late_by is None else SPIKE_AT
    return SpikeFiring(run, ProberMonitor(interval=0.02), lambda: wall, spike_at)


async def test_a_replica_past_the_tolerance_fires_now_and_says_so() -> None:
    """Past the shared instant by more than the tolerance: fire now, note by how much."""
    said: list[str] = []
    spike = firing(SHARED_INSTANT_TOLERANCE + 1.5, said)
    before = now()
    start = await spike.start()
    assert before <= start <= now()
    assert spike.run.timeline["shared_instant_missed_by"] == SHARED_INSTANT_TOLERANCE + 1.5
    assert said == ["spike: the shared spike instant passed 2.5s ago; firing now"]


async def test_a_replica_a_little_late_keeps_the_shared_instant() -> None:
    """Late within the tolerance, the plan keeps the shared instant: lateness shows it."""
    said: list[str] = []
    spike = firing(0.2, said)
    before = now()
    start = await spike.start()
    assert before - 0.2 <= start <= now() - 0.2
    assert "shared_instant_missed_by" not in spike.run.timeline
    assert spike.run.timeline["spike_start"] == start - spike.run.start
    assert said == []


async def test_over_workers_an_unshared_start_is_the_lead_from_now() -> None:
    """With workers (a lead) and no shared instant, the start is the lead from now."""
    spike = firing(None, [])
    before = now()
    start = await spike.start(lead=WORKER_LEAD)
    assert before + WORKER_LEAD <= start <= now() + WORKER_LEAD


def test_the_abort_tally_keeps_the_first_reason_and_skips_aborted_attempts() -> None:
    """The reason is the counts when the rule first held; aborted attempts are not counted."""
    tally = AbortTally(AbortRule(0.5, 2))
    for conn, outcome in enumerate((Outcome.OK, Outcome.ERROR, Outcome.ABORTED, Outcome.OK)):
        attempt = Attempt(Phase.SPIKE, conn)
        attempt.started = 1.0
        attempt.decide(outcome, "", 2.0, "connect")
        tally.count(attempt)
    assert (tally.finished, tally.failed) == (3, 1)
    assert tally.reason == "abort.error_ratio=0.5 reached: 1 of 2 failed"
