"""Probe the target one connection at a time: the baseline's probes, then recovery's.

The baseline's probes give B (their median latency) or find the target down; from T0
recovery probes every ``probe_interval`` until ``consecutive`` good ones in a row, or
its timeout. The decisions are the pure core's (:mod:`spikewatch.core.recovery`); each
class here keeps the attempts of its phase and hands over the phase's record.
"""

from __future__ import annotations

import asyncio
import itertools

from spikewatch.config import BaselineConfig, RecoveryConfig
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import BaselinePhase, RecoveryPhase
from spikewatch.core.recovery import (
    Baseline,
    RecoveryDecision,
    RecoveryTracker,
    decide_baseline,
    good_probe_limit,
    is_good_probe,
)
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection, open_connection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec


async def probe(
    run: RunInFlight,
    spec: ConnectionSpec,
    registry: ConnectionRegistry,
    attempt: Attempt,
    *,
    until_closed: bool = False,
) -> ClientConnection | None:
    """Open one probe connection (it closes itself once its steps are done); return it,
    None when no attempt was made.

    The connection stays the run's until it is gone, so that the run's end closes it
    whatever state its closing handshake is in (issue 12).
    """
    conn = await open_connection(spec, attempt, registry)
    if conn is not None:
        run.own(conn)
        if until_closed:
            # Bounded by the connection's own close timeout, which aborts it.
            await conn.wait_closed()
    return conn


class BaselineProbes:
    """The baseline: ``probes`` probes ``interval`` apart, and what they decided."""

    def __init__(self, run: RunInFlight, config: BaselineConfig) -> None:
        self.run = run
        self.config = config
        self.attempts: list[Attempt] = []
        #: The probes' connections, once closed: what their answers said (the version).
        self.conns: list[ClientConnection] = []
        #: A baseline cut short (or never begun) stands for a target that is down.
        self.decision = decide_baseline(config.probes, [])

    def record(self) -> BaselinePhase:
        """Return the phase's record as it stands."""
        return BaselinePhase(tuple(self.attempts), self.decision)

    def all_failed(self, outcome: Outcome, detail: str) -> None:
        """Record every probe as failed now, for a cause that fails them all (DNS)."""
        now = _now()
        for _ in range(self.config.probes):
            attempt = self.run.new_attempt(Phase.BASELINE)
            attempt.started = now
            attempt.decide(outcome, detail, now, "connect")
            self.attempts.append(attempt)
        self.run.progress(f"baseline: {detail}; target down, no spike fired")

    async def run_probes(self, spec: ConnectionSpec, registry: ConnectionRegistry) -> Baseline:
        """Probe, decide B (or a target that is down), and return the decision."""
        cfg, run = self.config, self.run
        run.progress(f"baseline: {cfg.probes} probes every {cfg.interval:g}s")
        start = run.mark("baseline_start")
        tasks = []

        async def one(attempt: Attempt) -> None:
            conn = await probe(run, spec, registry, attempt, until_closed=True)
            if conn is not None:
                self.conns.append(conn)

        for i in range(cfg.probes):
            await sleep_until(start + i * cfg.interval)
            attempt = run.new_attempt(Phase.BASELINE)
            self.attempts.append(attempt)
            # Baseline probes finish closing before the spike, so that none of them holds
            # a slot (or the target's attention) when the spike starts.
            tasks.append(run.spawn(one(attempt)))
        await asyncio.gather(*tasks)
        ok = [a.latency for a in self.attempts if a.outcome == Outcome.OK]
        baseline = decide_baseline(cfg.probes, [x for x in ok if x is not None])
        self.decision = baseline
        run.mark("baseline_end")
        if baseline.target_down:
            run.progress(f"baseline: {baseline.ok}/{cfg.probes} ok; target down, no spike fired")
        else:
            assert baseline.latency is not None
            run.progress(
                f"baseline: {baseline.ok}/{cfg.probes} ok, B = {baseline.latency * 1000:.2f} ms"
            )
        return baseline


class RecoveryProbes:
    """Recovery from T0: probes every ``probe_interval``, good when within B's limit."""

    def __init__(
        self, run: RunInFlight, config: RecoveryConfig, t0: float, baseline: float
    ) -> None:
        self.run = run
        self.config = config
        self.t0 = t0
        self.limit = good_probe_limit(baseline, config.tolerance, config.slack)
        self.attempts: list[Attempt] = []
        self.decision: RecoveryDecision | None = None

    def record(self) -> RecoveryPhase:
        """Return the phase's record as it stands (no decision when it was cut short)."""
        return RecoveryPhase(tuple(self.attempts), self.decision, self.limit, self.config.timeout)

    async def run_probes(
        self, spec: ConnectionSpec, registry: ConnectionRegistry
    ) -> RecoveryDecision:
        """Probe until recovery is decided; return the decision."""
        cfg, run, t0, limit = self.config, self.run, self.t0, self.limit
        run.progress(
            f"recovery: a probe every {cfg.probe_interval:g}s, good when ≤ {limit * 1000:.2f} ms, "
            f"{cfg.consecutive} in a row, timeout {cfg.timeout:g}s"
        )
        tracker = RecoveryTracker(t0, cfg.consecutive, cfg.timeout)

        async def one(probe_id: int, attempt: Attempt) -> None:
            await probe(self.run, spec, registry, attempt)
            ok = attempt.outcome == Outcome.OK
            tracker.probe_finished(probe_id, is_good_probe(ok, attempt.latency, limit))

        tasks = []
        for probe_id in itertools.count():
            slot = t0 + probe_id * cfg.probe_interval
            await sleep_until(slot)
            # Judge the slot itself, as it is what the probe is recorded to start at: not
            # the wake-up, which may be a hair early (a slot on the deadline would start
            # past it) or late (a slot before the deadline would be dropped).
            if not tracker.wants_more_probes(slot):
                break
            # The probe's start is its slot (T0 + k * interval), not when the loop woke:
            # recovery is 0 when the first probe begins the good run (the contract).
            tracker.probe_started(probe_id, slot)
            attempt = run.new_attempt(Phase.RECOVERY, slot)
            self.attempts.append(attempt)
            tasks.append(run.spawn(one(probe_id, attempt)))
        await asyncio.gather(*tasks)
        decision = tracker.decision()
        if decision.state == "pending":
            decision = tracker.close()
        self.decision = decision
        run.mark("recovery_end")
        if decision.state == "recovered":
            assert decision.seconds is not None
            run.progress(
                f"recovery: recovered after {decision.seconds:.3f}s ({len(self.attempts)} probes)"
            )
        else:
            run.progress(f"recovery: did not recover within {cfg.timeout:g}s")
        return decision
