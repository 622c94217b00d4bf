"""Run queued runs with a concurrency cap; a target-scenario pair never overlaps itself."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from spikewatch.daemon.history import RunEntry
from spikewatch.daemon.state import AlreadyQueuedError, QueueFullError

log = logging.getLogger(__name__)

Pair = tuple[str, str]


class RunDispatcher:
    """A bounded FIFO of runs, started at most ``max_concurrent`` at a time.

    A pair that is already queued or running is refused (:class:`AlreadyQueuedError`):
    the scheduler counts that as a coalesced run instead of piling runs up behind a
    slow one. The queue holds at most ``max_queued`` entries (:class:`QueueFullError`).
    """

    def __init__(
        self,
        execute: Callable[[RunEntry], Awaitable[None]],
        *,
        max_concurrent: int,
        max_queued: int,
    ) -> None:
        self._execute = execute
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._queue: deque[RunEntry] = deque()
        self._busy: dict[Pair, RunEntry] = {}
        self._running: dict[asyncio.Task[None], RunEntry] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    def state_of(self, pair: Pair) -> str:
        """Return ``idle``, ``queued`` or ``running`` for a pair."""
        entry = self._busy.get(pair)
        return "idle" if entry is None else entry.state

    @property
    def queued(self) -> int:
        """Entries waiting for a slot."""
        return len(self._queue)

    @property
    def running(self) -> int:
        """Runs in flight."""
        return len(self._running)

    def submit(self, entry: RunEntry) -> None:
        """Queue a run; raise when its pair is busy or the queue is full."""
        if self._closed:
            raise QueueFullError("the daemon is shutting down")
        pair = (entry.target, entry.scenario)
        busy = self._busy.get(pair)
        if busy is not None:
            raise AlreadyQueuedError(
                f"{entry.target}/{entry.scenario} is already {busy.state} (run {busy.id})"
            )
        if len(self._queue) >= self.max_queued:
            raise QueueFullError(f"the run queue is full ({self.max_queued} waiting)")
        self._busy[pair] = entry
        self._queue.append(entry)
        self._idle.clear()
        self._pump()

    def _pump(self) -> None:
        if not self._queue:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a run's coroutine closed after its loop ended: start nothing
            return
        while self._queue and len(self._running) < self.max_concurrent:
            entry = self._queue.popleft()
            entry.state = "running"
            task = loop.create_task(
                self._run(entry), name=f"run {entry.target}/{entry.scenario} {entry.id}"
            )
            self._running[task] = entry
            task.add_done_callback(self._finished)

    async def _run(self, entry: RunEntry) -> None:
        task = asyncio.current_task()
        try:
            await self._execute(entry)
        except asyncio.CancelledError:
            entry.state = "cancelled"
            raise
        except Exception:
            log.exception("run %s of %s/%s crashed", entry.id, entry.target, entry.scenario)
        finally:
            if entry.state == "running":
                entry.state = "done"
            # Free the pair and the slot now, not a loop turn later in the done callback:
            # a finished run must not make the next one look like an overlap.
            self._release(entry, task)

    def _release(self, entry: RunEntry, task: asyncio.Task[Any] | None) -> None:
        self._busy.pop((entry.target, entry.scenario), None)
        if task is not None:
            self._running.pop(task, None)
        if not self._closed:
            self._pump()
        if not self._running and not self._queue:
            self._idle.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        # A safety net for a task cancelled before its coroutine ever ran.
        entry = self._running.pop(task, None)
        if entry is not None:
            self._release(entry, None)

    async def cancel_all(self, grace: float) -> bool:
        """Stop taking runs, cancel those in flight; True when all ended within ``grace`` s."""
        self._closed = True
        for entry in self._queue:
            entry.state = "cancelled"
            self._busy.pop((entry.target, entry.scenario), None)
        self._queue.clear()
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=grace)
        return not pending
