"""Spread a spike over worker processes (``prober.workers``), from the daemon's side.

The daemon keeps everything that is not the spike itself: baseline, stable
connections, recovery probes, the verdict, the metrics and ``limits.max_connections``.
A :class:`WorkerPool` holds long-lived worker processes (each runs
:mod:`spikewatch.engine.worker_main`); for each run a
:class:`~spikewatch.engine.spike_on_workers.SpikeOnWorkers` deals the spike round-robin
to them, sends each its share with the planned monotonic instants, merges the attempts
they send back into the run's own :class:`~spikewatch.core.attempt.Attempt` objects,
and tells them when to close what they hold.

- **Limits**: the slots of the whole spike are taken from the daemon's registry before
  anything is sent (attempts past the limit are ``aborted``, as in one process); a
  failed attempt's slot comes back when its worker reports, a held one's when its
  worker confirms it closed.
- **Abort rule**: decided here over the sum of every worker's streamed progress, then
  sent to every worker: batches that start after the decision reaches them are aborted.
- **A lost worker** (it exited, or did not answer in time and was killed): the attempts
  of its share that it had not reported become ``error`` with the cause, the run's
  result is ``error`` (never the target's failure), and the next run starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from spikewatch.engine.eventloop import EventLoopChoice
from spikewatch.engine.worker_messages import (
    WORKER_MESSAGES,
    WireError,
    WireMessage,
    WorkerMessage,
    encode_message,
    read_message,
)
from spikewatch.errors import SpikewatchError

log = logging.getLogger(__name__)

#: How long a worker may take to start and build its connection settings.
START_TIMEOUT = 30.0
#: Added to every other wait for a worker's answer (its own work is bounded already).
ANSWER_MARGIN = 5.0
#: How long a worker gets to report its health at the end of a run: at least this, and
#: long enough for its own bound on closing what it still holds (close_timeout + 1 s)...
FINISH_TIMEOUT = 5.0
#: ...but never more than this, so that SIGTERM still exits within the contract's 10 s.
FINISH_TIMEOUT_CAP = 8.0
#: How long the pool waits for its workers to exit before killing them.
STOP_TIMEOUT = 3.0


class WorkerLostError(SpikewatchError):
    """A worker process exited or stopped answering; the message says which and how."""


#: What a run's inbox holds: a message, a bad one (the run judges it), or the loss.
Inbound = WorkerMessage | WireError | WorkerLostError


def _exit_cause(number: int, code: int | None) -> str:
    if code is None:
        return f"worker {number} closed its pipe"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"worker {number} exited with code {code} ({signal.Signals(-code).name})"
    return f"worker {number} exited with code {code}"


class WorkerProcess:
    """One worker: its process, and the inbox of every run it is part of."""

    def __init__(self, number: int, command: Sequence[str]) -> None:
        self.number = number
        self._command = tuple(command)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inboxes: dict[str, asyncio.Queue[Inbound]] = {}
        self._lost: WorkerLostError | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        """Whether the process runs and its pipe is readable."""
        return self._proc is not None and self._lost is None

    @property
    def pid(self) -> int | None:
        """The process id, while there is a process."""
        return self._proc.pid if self._proc is not None else None

    async def ensure_started(self) -> None:
        """Start the process if it is not running (a lost worker is replaced)."""
        async with self._lock:
            if self.alive:
                return
            if self._proc is not None:
                await self._reap()
            self._lost = None
            self._stopping = False
            self._proc = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            self._reader = asyncio.get_running_loop().create_task(
                self._read(self._proc), name=f"worker {self.number} reader"
            )

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        cause = ""
        try:
            while True:
                item: Inbound
                try:
                    message = await read_message(proc.stdout, WORKER_MESSAGES)
                except WireError as exc:
                    if exc.run is None:
                        raise  # the stream is garbled: nothing after it can be trusted
                    run, item = exc.run, exc  # a well-framed message: its run judges it
                else:
                    if message is None:
                        break
                    run, item = message.run, message
                inbox = self._inboxes.get(run)
                if inbox is not None:
                    inbox.put_nowait(item)
        except WireError as exc:
            cause = f"worker {self.number} sent a malformed message: {exc}"
        if cause:
            proc.kill()
        try:
            code: int | None = await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        self._set_lost(cause or _exit_cause(self.number, code))

    def _set_lost(self, cause: str) -> None:
        if self._lost is not None:
            return
        self._lost = WorkerLostError(cause)
        log.log(logging.INFO if self._stopping else logging.WARNING, "%s", cause)
        for inbox in self._inboxes.values():
            inbox.put_nowait(self._lost)

    def open_inbox(self, run: str) -> None:
        """Start collecting this run's messages."""
        inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        if self._lost is not None:
            inbox.put_nowait(self._lost)
        self._inboxes[run] = inbox

    def close_inbox(self, run: str) -> None:
        """Stop collecting this run's messages."""
        self._inboxes.pop(run, None)

    def send(self, message: WireMessage) -> None:
        """Send a message; raise :class:`WorkerLostError` when the worker is gone."""
        if self._lost is not None:
            raise self._lost
        assert self._proc is not None
        assert self._proc.stdin is not None
        if self._proc.stdin.is_closing():
            raise WorkerLostError(f"worker {self.number} is stopping")
        self._proc.stdin.write(encode_message(message))

    async def receive(self, run: str, within: float, doing: str) -> WorkerMessage:
        """Return the run's next message; a worker silent for ``within`` s is killed.

        A message for this run that is not what the protocol says is raised as its
        :class:`WireError`: what a bad answer means depends on the question.
        """
        inbox = self._inboxes[run]
        try:
            item = await asyncio.wait_for(inbox.get(), max(0.0, within))
        except TimeoutError:
            cause = f"worker {self.number} did not {doing} within {within:.1f}s; killed it"
            self.kill(cause)
            raise WorkerLostError(cause) from None
        if isinstance(item, WorkerLostError):
            inbox.put_nowait(item)  # every later receive sees it too
            raise item
        if isinstance(item, WireError):
            raise item
        return item

    def kill(self, cause: str) -> None:
        """Kill the process now; ``cause`` is what every waiting run is told."""
        self._set_lost(cause)
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    async def _reap(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def stop(self) -> None:
        """End the worker: close its stdin (it closes its connections and exits), then kill."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
        self._set_lost(f"worker {self.number} was stopped")
        await self._reap()
        self._proc = None


def worker_command(event_loop: EventLoopChoice = "auto") -> list[str]:
    """Return the command that starts one worker with this interpreter and loop choice."""
    return [sys.executable, "-m", "spikewatch.engine.worker_main", "--event-loop", event_loop]


class WorkerPool:
    """``size`` long-lived worker processes, started with the daemon."""

    def __init__(
        self,
        size: int,
        *,
        lag_interval: float,
        event_loop: EventLoopChoice = "auto",
        command: Sequence[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.lag_interval = lag_interval
        # The daemon's own loop choice: both clocks are CLOCK_MONOTONIC (uvloop's in ms).
        cmd = list(command) if command is not None else worker_command(event_loop)
        self.workers = [WorkerProcess(n, cmd) for n in range(size)]

    @property
    def size(self) -> int:
        """How many workers a spike is spread over."""
        return len(self.workers)

    async def start(self) -> None:
        """Start every worker that is not running."""
        await asyncio.gather(*(w.ensure_started() for w in self.workers))

    async def close(self) -> None:
        """Stop every worker."""
        await asyncio.gather(*(w.stop() for w in self.workers))
