"""Fire a churn: connections opened at a rate for a duration, each a probe's cycle that closes.

Connection ``i`` is due at ``i / rate`` from the churn's start
(:func:`~spikewatch.core.plan.plan_churn`), paced by
:class:`~spikewatch.engine.churn_pace.ChurnStarts`. Each connection is made exactly as
a probe is (:func:`~spikewatch.engine.connection.open_connection`, not held), so it runs
whatever cycle the target's probes run, and closes; it keeps its slot until its TCP
connection is gone. The abort rule stops the churn at once (every start still planned
is ``aborted``). With ``prober.workers`` > 1 the starts are dealt round-robin to the
workers, each at its planned instant, so each worker offers its share of the rate;
``max_in_flight`` and the free slots are dealt the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Phase
from spikewatch.core.phases import ChurnPlan
from spikewatch.core.plan import PlannedConnection
from spikewatch.engine.churn_pace import ChurnStarts, until_closed
from spikewatch.engine.connection import open_connection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.engine.spike import WORKER_LEAD, AbortTally, SpikeFiring
from spikewatch.engine.spike_on_workers import SpikeOnWorkers

__all__ = ["ChurnFiring"]


class ChurnFiring(SpikeFiring):
    """One run's churn as it is fired: a spike whose connections close after their cycle.

    ``rate`` is the rate this daemon offers (a sharded replica's share of the churn's),
    ``duration`` the churn's. It holds nothing open past T0 (``held`` stays empty); its
    start, its marks and T0 are the spike's.
    """

    def __init__(
        self,
        run: RunInFlight,
        monitor: ProberMonitor,
        wall_clock: Callable[[], float],
        spike_at: float | None = None,
        *,
        rate: float,
        duration: float,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(run, monitor, wall_clock, spike_at)
        self.rate = rate
        self.duration = duration
        self.max_in_flight = max_in_flight
        #: The churn's connections open at once, at most (over workers: their sum).
        self.peak_in_flight = 0
        self.started: float | None = None

    async def start(self, lead: float = 0.0) -> float:
        """Return the churn's planned start (:meth:`SpikeFiring.start`), and keep it."""
        self.started = await super().start(lead)
        return self.started

    def plan_record(self) -> ChurnPlan | None:
        """Return what the churn was asked to do and its peak; None before it started."""
        if self.started is None:
            return None
        return ChurnPlan(
            rate=self.rate,
            duration=self.duration,
            started=self.started,
            max_in_flight=self.max_in_flight,
            peak_in_flight=self.peak_in_flight,
        )

    async def churn(
        self,
        spec: ConnectionSpec,
        registry: ConnectionRegistry,
        plan: tuple[PlannedConnection, ...],
        rule: AbortRule,
    ) -> str:
        """Fire the churn from this event loop; return the abort reason, if any."""
        tally = AbortTally(rule)

        async def cycle(attempt: Attempt) -> None:
            conn = await open_connection(spec, attempt, registry, reserve=PROBE_RESERVE)
            tally.count(attempt)
            await until_closed(conn)

        def record(_: int, planned: float) -> Attempt:
            attempt = self.run.new_attempt(Phase.SPIKE, planned)
            self.attempts.append(attempt)
            return attempt

        start = await self.start()
        start_mark = self.monitor.mark()
        starts = ChurnStarts(self.max_in_flight)
        planned = ((start + p.offset, p.index) for p in plan)
        try:
            await starts.fire(planned, record, cycle, self.run.spawn, lambda: tally.reason)
        finally:
            self.peak_in_flight = starts.peak_in_flight
        self.marks = (start_mark, self.monitor.mark())
        return tally.reason

    async def on_workers(
        self,
        workers: SpikeOnWorkers,
        plan: tuple[PlannedConnection, ...],
        rule: AbortRule,
        attempt_bound: float,
    ) -> str:
        """Fire the churn over the worker processes; return the abort reason, if any.

        ``attempt_bound`` is the longest one cycle may take, its close included: a worker
        reports its share once every connection of it is gone.
        """
        try:
            return await self._fire_on_workers(
                workers,
                plan,
                rule,
                attempt_bound,
                WORKER_LEAD,
                churn=True,
                max_in_flight=self.max_in_flight,
            )
        finally:
            self.peak_in_flight = workers.peak_in_flight
