"""What every phase of one run shares while the run is in flight.

Its clock and timeline, the tasks it spawned (cancelled on every exit path), the
numbering of its connections and its progress messages. What the phases found is
handed over as records (:mod:`spikewatch.core.phases`), not kept here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Phase
from spikewatch.engine.clock import now as _now

if TYPE_CHECKING:
    from spikewatch.engine.connection import ClientConnection

ProgressFn = Callable[[str], None]


class RunInFlight:
    """One run's clock, timeline, tasks, connection numbers and progress messages."""

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[Any]] = set()
        #: Seconds since :attr:`start` (or another figure, such as a missed instant).
        self.timeline: dict[str, float] = {}
        self.start = 0.0
        self._conn_ids = itertools.count()
        #: Probe connections that may still be closing; the run's end closes them.
        self.owned: list[ClientConnection] = []

    def begin(self) -> float:
        """Start the run's clock now; return the instant (loop time)."""
        self.start = _now()
        return self.start

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of the run."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def own(self, conn: ClientConnection) -> None:
        """Keep ``conn`` to be closed, at the latest, when the run ends."""
        self.owned.append(conn)

    def mark(self, name: str, at: float | None = None) -> float:
        """Note ``name`` in the timeline at ``at`` (loop time, default now); return it."""
        when = _now() if at is None else at
        self.timeline[name] = when - self.start
        return when

    def new_attempt(self, phase: Phase, planned: float | None = None) -> Attempt:
        """Return a new attempt of ``phase``, numbered in the run's order."""
        return Attempt(phase, next(self._conn_ids), planned=planned)
