"""Start churn connections at their planned instants, at most so many in flight at once.

Shared by the daemon's own churn (:mod:`spikewatch.engine.churn`) and a worker's share of
one (:mod:`spikewatch.engine.worker_main`). The pace is a schedule, not a sleep after
each start: the loop wakes at each due instant and starts every connection due by then,
each recorded with its own planned instant, so a late wake-up shows as start lateness
(as for a batch) instead of slowing the rate. A start past ``max_in_flight``, or after
the churn was stopped, is ``aborted`` rather than queued; once stopped, every start
still planned is recorded at once, none waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from spikewatch.core.attempt import Attempt
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection
from spikewatch.engine.launch import launch

__all__ = ["ChurnStarts", "until_closed"]


async def until_closed(conn: ClientConnection | None) -> None:
    """Wait until a churn connection is gone; abort it if the wait is cancelled.

    Bounded: a connection aborts itself past its close timeout.
    """
    if conn is None:
        return
    try:
        await conn.wait_closed()
    except asyncio.CancelledError:
        conn.abort()
        raise


class ChurnStarts:
    """The churn's starts and how many of its connections are in flight (started, not yet
    closed), now and at most."""

    def __init__(self, max_in_flight: int | None = None, full: str | None = None) -> None:
        self.max_in_flight = max_in_flight
        #: The detail of a start past ``max_in_flight`` (a worker's names its share).
        self.full = full or f"churn.max_in_flight={max_in_flight} reached"
        self.in_flight = 0
        self.peak_in_flight = 0

    async def fire(
        self,
        planned: Iterable[tuple[float, int]],
        record: Callable[[int, float], Attempt],
        cycle: Callable[[Attempt], Coroutine[Any, Any, None]],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        stopped: Callable[[], str],
    ) -> None:
        """Start ``cycle(attempt)`` for each ``(instant, conn)`` of ``planned`` (in order)
        at its instant; return when every cycle is over.

        ``record(conn, instant)`` makes and keeps the attempt; ``stopped()`` says why the
        churn was stopped ("" while it runs); ``cycle`` ends when its connection is gone.
        """
        pending: set[asyncio.Task[None]] = set()
        limit = self.max_in_flight
        due = iter(planned)
        item = next(due, None)
        while item is not None:
            await sleep_until(item[0])
            now = _now()
            batch: list[Attempt] = []
            while item is not None and (stopped() or item[0] <= now):
                attempt = record(item[1], item[0])
                item = next(due, None)
                if reason := stopped():
                    attempt.abort(now, reason)
                elif limit is not None and self.in_flight >= limit:
                    attempt.abort(now, self.full)
                else:
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                    batch.append(attempt)
            for task in await launch(batch, self._counted(cycle), spawn):
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    def _counted(
        self, cycle: Callable[[Attempt], Coroutine[Any, Any, None]]
    ) -> Callable[[Attempt], Coroutine[Any, Any, None]]:
        async def counted(attempt: Attempt) -> None:
            try:
                await cycle(attempt)
            finally:
                self.in_flight -= 1

        return counted
