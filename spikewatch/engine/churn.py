"""Fire a churn: connections opened at a rate for a duration, each a probe's cycle that closes.

Connection ``i`` is due at ``i / rate`` from the churn's start
(:func:`~spikewatch.core.plan.plan_churn`). The loop wakes at each due instant and starts
every connection due by then, each recorded with its own planned instant: a late wake-up
shows as start lateness, as for a batch, instead of slowing the rate (a sleep after each
start would hide it). Each connection is made exactly as a probe is
(:func:`~spikewatch.engine.connection.open_connection`, not held), so it runs whatever
cycle the target's probes run, and closes; it keeps its slot until its TCP connection is
gone. The abort rule stops the churn at once (every start still planned is ``aborted``);
``max_in_flight`` turns a start past it into ``aborted`` rather than queueing it, as the
registry does with its own limit. A churn runs from the daemon's own event loop only
(``prober.workers`` > 1 with a churn is a config error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import ChurnPlan
from spikewatch.core.plan import PlannedConnection
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import open_connection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.launch import launch
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.engine.spike import SpikeFiring

__all__ = ["ChurnFiring"]


class ChurnFiring(SpikeFiring):
    """One run's churn as it is fired: a spike whose connections close after their cycle.

    ``rate`` is the rate this process offers (a sharded replica's share of the churn's),
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
        #: Churn connections started and not yet closed, now and at most.
        self.in_flight = 0
        self.peak_in_flight = 0
        self.started: float | None = None

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
        finished = failed = 0
        abort_reason = ""

        async def one(attempt: Attempt) -> None:
            nonlocal finished, failed, abort_reason
            try:
                conn = await open_connection(spec, attempt, registry, reserve=PROBE_RESERVE)
                if attempt.outcome != Outcome.ABORTED:
                    finished += 1
                    failed += attempt.outcome != Outcome.OK
                    if not abort_reason and rule.should_abort(finished, failed):
                        abort_reason = (
                            f"abort.error_ratio={rule.error_ratio:g} reached:"
                            f" {failed} of {finished} failed"
                        )
                if conn is not None:
                    try:
                        # Bounded: the connection aborts itself past its close timeout.
                        await conn.wait_closed()
                    except asyncio.CancelledError:
                        conn.abort()
                        raise
            finally:
                self.in_flight -= 1

        start = self.started = await self.start()
        start_mark = self.monitor.mark()
        pending: set[asyncio.Task[None]] = set()
        limit = self.max_in_flight
        due = iter(plan)
        planned = next(due, None)
        while planned is not None:
            await sleep_until(start + planned.offset)
            now = _now()
            batch: list[Attempt] = []
            while planned is not None and (abort_reason or start + planned.offset <= now):
                attempt = self.run.new_attempt(Phase.SPIKE, start + planned.offset)
                self.attempts.append(attempt)
                planned = next(due, None)
                if abort_reason:
                    # Stopped: every start still planned is recorded now, none waited for.
                    attempt.abort(now, abort_reason)
                elif limit is not None and self.in_flight >= limit:
                    attempt.abort(now, f"churn.max_in_flight={limit} reached")
                else:
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                    batch.append(attempt)
            for task in await launch(batch, one, self.run.spawn):
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        self.marks = (start_mark, self.monitor.mark())
        return abort_reason
