"""Plan a run's spike, and fire it at its planned instants, here or over worker processes.

Sharded replicas start their shares at one shared wall-clock instant. Fired here, the
abort rule is judged as each attempt finishes; over workers, :class:`SpikeOnWorkers`
judges it over what they stream back. The prober's monitor is marked around the firing,
so that its health is judged over the spike alone.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from spikewatch.config import ScenarioConfig
from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.plan import (
    PlannedConnection,
    plan_churn,
    plan_duration,
    plan_ramp,
    plan_spike,
    shard_plan,
)
from spikewatch.core.result import count_outcomes
from spikewatch.engine.armed import ARM_AHEAD, ArmedBatch, ArmedConnection
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection, open_connection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.prober_monitor import Mark, ProberMonitor
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.engine.spike_on_workers import SpikeOnWorkers, abort_reached
from spikewatch.engine.worker_pool import ANSWER_MARGIN

#: A sharded replica that reaches its spike later than this after the shared instant
#: fires at once instead (and says so in the run's timeline).
SHARED_INSTANT_TOLERANCE = 1.0

#: With worker processes the spike starts this long after the daemon decides to fire,
#: so that every worker has its share before the first batch is due...
WORKER_LEAD = 0.05
#: ...and, per connection of a worker's share of the first batch, the time to arm it.
ARM_SECONDS_PER_CONNECTION = 40e-6


def spike_plan(
    scenario: ScenarioConfig, share: tuple[int, int] | None = None
) -> tuple[PlannedConnection, ...]:
    """Return the planned spike (avalanche, ramp or churn), or replica ``share``'s part."""
    if scenario.spike is not None:
        s = scenario.spike
        plan = plan_spike(s.connections, s.batches, s.batch_interval)
    elif scenario.churn is not None:
        plan = plan_churn(scenario.churn.rate, scenario.churn.duration)
    else:
        assert scenario.ramp is not None
        plan = plan_ramp(scenario.ramp.steps, scenario.ramp.step_interval)
    if share is not None and share[1] > 1:
        plan = shard_plan(plan, share[0], share[1])
    return plan


class AbortTally:
    """The abort rule judged as attempts finish here: counts, and the reason once it stops."""

    __slots__ = ("failed", "finished", "reason", "rule")

    def __init__(self, rule: AbortRule) -> None:
        self.rule = rule
        self.finished = self.failed = 0
        #: Why the rule stopped the spike; empty while it has not.
        self.reason = ""

    def count(self, attempt: Attempt) -> None:
        """Count ``attempt``, which has its outcome (an aborted one did not finish)."""
        outcome = attempt.outcome
        if outcome == Outcome.ABORTED:
            return
        self.finished += 1
        if outcome != Outcome.OK:
            self.failed += 1
        if not self.reason:
            self.reason = abort_reached(self.rule, self.finished, self.failed)


class SpikeFiring:
    """One run's spike as it is fired: its attempts, what it holds open, the marks around it.

    ``spike_at`` (epoch seconds, read on ``wall_clock``) is a sharded run's shared instant.
    """

    def __init__(
        self,
        run: RunInFlight,
        monitor: ProberMonitor,
        wall_clock: Callable[[], float],
        spike_at: float | None = None,
    ) -> None:
        self.run = run
        self.monitor = monitor
        self.wall_clock = wall_clock
        self.spike_at = spike_at
        self.attempts: list[Attempt] = []
        self.held: list[ClientConnection] = []
        self.marks: tuple[Mark, Mark] | None = None

    async def start(self, lead: float = 0.0) -> float:
        """Return the spike's planned start (loop time).

        In one process, wait until a shared instant; with workers (``lead`` > 0) return
        at once: they wait themselves, and an unshared start is ``lead`` from now.
        """
        run, spike_at = self.run, self.spike_at
        missed = 0.0 if spike_at is None else self.wall_clock() - spike_at
        if spike_at is not None and missed <= SHARED_INSTANT_TOLERANCE:
            # A sharded run: every replica starts its share at the same wall-clock instant.
            # The plan keeps that instant even when this replica is a little late, so the
            # delay shows as start lateness instead of vanishing.
            spike_start = _now() - missed
            if not lead:
                await sleep_until(spike_start)
        else:
            if missed > SHARED_INSTANT_TOLERANCE:
                # Queued behind other runs, or a long baseline: the shared instant is gone.
                # Fire now and say so; lateness would otherwise charge the queue wait to
                # the prober and make every such run "invalid".
                run.timeline["shared_instant_missed_by"] = missed
                run.progress(
                    f"spike: the shared spike instant passed {missed:.1f}s ago; firing now"
                )
            spike_start = _now() + lead
        return run.mark("spike_start", spike_start)

    async def on_workers(
        self,
        workers: SpikeOnWorkers,
        plan: tuple[PlannedConnection, ...],
        rule: AbortRule,
        attempt_bound: float,
    ) -> str:
        """Fire the spike over the worker processes; return the abort reason, if any."""
        first = sum(1 for p in plan if p.group == plan[0].group) if plan else 0
        share = -(-first // max(workers.pool.size, 1))
        lead = WORKER_LEAD + share * ARM_SECONDS_PER_CONNECTION
        return await self._fire_on_workers(workers, plan, rule, attempt_bound, lead)

    async def _fire_on_workers(
        self,
        workers: SpikeOnWorkers,
        plan: tuple[PlannedConnection, ...],
        rule: AbortRule,
        attempt_bound: float,
        lead: float,
        *,
        churn: bool = False,
        max_in_flight: int | None = None,
    ) -> str:
        """Start ``lead`` from now, make the plan's attempts and have the workers fire them
        (a churn's, with its bound); return the abort reason, if any."""
        spike_start = await self.start(lead=lead)
        start_mark = self.monitor.mark()
        new_attempt = self.run.new_attempt
        self.attempts.extend(new_attempt(Phase.SPIKE, spike_start + p.offset) for p in plan)
        answer_by = spike_start + plan_duration(plan) + attempt_bound + ANSWER_MARGIN
        abort_reason = await workers.fire(
            self.attempts, rule, answer_by, churn=churn, max_in_flight=max_in_flight
        )
        self.marks = (start_mark, self.monitor.mark())
        return abort_reason

    async def here(
        self,
        spec: ConnectionSpec,
        registry: ConnectionRegistry,
        plan: tuple[PlannedConnection, ...],
        rule: AbortRule,
    ) -> str:
        """Fire the spike from this event loop; return the abort reason, if any.

        Each batch is armed before its instant (:mod:`spikewatch.engine.armed`): the
        first before the spike's start is set, the next ones as soon as the one before
        is out, but no earlier than :data:`ARM_AHEAD` before their instant.
        """
        tally = AbortTally(rule)

        async def one(attempt: Attempt, armed: ArmedConnection | None) -> None:
            if armed is not None:
                conn: ClientConnection | None = await armed.complete()
            else:
                conn = await open_connection(
                    spec, attempt, registry, keep_open=True, reserve=PROBE_RESERVE
                )
            if conn is not None and attempt.outcome == Outcome.OK:
                self.held.append(conn)
            tally.count(attempt)

        groups = [list(g) for _, g in itertools.groupby(plan, key=lambda p: p.group)]
        tasks: list[asyncio.Task[None]] = []
        batch: ArmedBatch | None = None
        try:
            batch = await self._arm(groups[0], spec, registry) if groups else None
            spike_start = await self.start()
            start_mark = self.monitor.mark()
            for group in groups:
                planned = spike_start + group[0].offset
                if batch is None:
                    await sleep_until(planned - ARM_AHEAD)
                    batch = await self._arm(group, spec, registry, armed=not tally.reason)
                await sleep_until(planned)
                self.attempts.extend(batch.attempts)
                if tally.reason:
                    now = _now()
                    for attempt in batch.attempts:
                        attempt.planned = planned
                        attempt.abort(now, tally.reason)
                    batch.release()
                else:
                    tls = spec.ssl is not None
                    tasks.extend(await batch.fire(planned, one, self.run.spawn, tls=tls))
                batch = None
            await asyncio.gather(*tasks)
        finally:
            if batch is not None:
                batch.release()  # armed, never started: a cancel or a deadline
        self.marks = (start_mark, self.monitor.mark())
        return tally.reason

    async def _arm(
        self,
        group: list[PlannedConnection],
        spec: ConnectionSpec,
        registry: ConnectionRegistry,
        *,
        armed: bool = True,
    ) -> ArmedBatch:
        batch = ArmedBatch([self.run.new_attempt(Phase.SPIKE) for _ in group])
        if armed:
            await batch.arm(spec, registry, reserve=PROBE_RESERVE)
        return batch

    def t0(self) -> float:
        """Return T0, when the last attempt made finished; note it and say how the spike went."""
        ended = [a.ended for a in self.attempts if a.outcome != Outcome.ABORTED]
        t0 = max((e for e in ended if e is not None), default=_now())
        run = self.run
        run.mark("t0", t0)
        outcomes = ", ".join(f"{n} {o}" for o, n in count_outcomes(self.attempts).items())
        spike_start = run.start + run.timeline["spike_start"]
        run.progress(
            f"spike: last attempt finished {t0 - spike_start:.3f}s after start: {outcomes}"
        )
        return t0
