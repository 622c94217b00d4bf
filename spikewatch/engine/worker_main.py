"""A worker process: fire the share of a spike the daemon hands it, report what happened.

Started by the daemon as ``python -m spikewatch.engine.worker_main``; the conversation is in
:mod:`spikewatch.engine.worker_messages`. A worker decides nothing about a run: it opens
its connections at the instants it is given, holds them until told to close, and sends
back every attempt and its own loop lag, CPU and memory. It exits when its stdin ends
(the daemon is gone) and, on SIGTERM, after closing its connections. SIGINT is ignored:
Ctrl-C reaches the whole process group, and the daemon stops its workers itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine import eventloop
from spikewatch.engine.armed import ARM_AHEAD, ArmedBatch, ArmedConnection
from spikewatch.engine.churn_pace import ChurnStarts, until_closed
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection, losses, open_connection
from spikewatch.engine.prober_monitor import Mark, ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec, build_connection_spec
from spikewatch.engine.worker_messages import (
    DAEMON_MESSAGES,
    Abort,
    Attempts,
    Close,
    Closed,
    DaemonMessage,
    Failed,
    Health,
    Prepare,
    Prepared,
    Progress,
    Spike,
    WireMessage,
    WorkerHealth,
    attempt_to_wire,
    encode_message,
    read_message,
    target_from_wire,
)
from spikewatch.heap import freeze_long_lived
from spikewatch.protocol.receive_budget import DEFAULT_RECEIVE_BUDGET_BYTES

log = logging.getLogger(__name__)

Send = Callable[[WireMessage], None]

#: The daemon enforces limits.max_connections for every process; a worker only counts.
_UNLIMITED = 1 << 30


class ShareRun:
    """One run's share of a spike inside this worker."""

    def __init__(self, run: str, spec: ConnectionSpec, monitor: ProberMonitor, send: Send) -> None:
        self.run = run
        self.spec = spec
        self.monitor = monitor
        self.send = send
        self.registry = ConnectionRegistry(_UNLIMITED)
        self.attempts: list[Attempt] = []
        self.conns: list[ClientConnection] = []
        self.abort_reason = ""
        self.marks: tuple[Mark, Mark] | None = None
        self.fire_task: asyncio.Task[None] | None = None
        self._finished = self._failed = 0
        self._progress = False
        self._flush_pending = False

    async def fire(self, groups: list[tuple[float, list[int]]], *, progress: bool) -> None:
        """Arm and open the share's connections group by group; then send every attempt.

        Each group is armed (:mod:`spikewatch.engine.armed`) no earlier than
        :data:`ARM_AHEAD` before its instant, once the group before it is out.
        """
        loop = asyncio.get_running_loop()
        self._progress = progress
        tasks: list[asyncio.Task[None]] = []
        start: Mark | None = None
        batch: ArmedBatch | None = None
        try:
            for at, conns in groups:
                batch = ArmedBatch([Attempt(Phase.SPIKE, conn, planned=at) for conn in conns])
                await sleep_until(at - ARM_AHEAD)
                if not self.abort_reason:
                    await batch.arm(self.spec, self.registry)
                await sleep_until(at)
                if start is None:
                    start = self.monitor.mark()
                self.attempts.extend(batch.attempts)
                if self.abort_reason:
                    now = _now()
                    for attempt in batch.attempts:
                        attempt.abort(now, self.abort_reason)
                    batch.release()
                else:
                    tls = self.spec.ssl is not None
                    tasks.extend(await batch.fire(at, self._one, loop.create_task, tls=tls))
                batch = None
            await asyncio.gather(*tasks)
        finally:
            if batch is not None:
                batch.release()  # armed, never started: the run ended first
        end = self.monitor.mark()
        self.marks = (start or end, end)
        self.send(Attempts(run=self.run, attempts=[attempt_to_wire(a) for a in self.attempts]))

    async def fire_churn(
        self,
        groups: list[tuple[float, list[int]]],
        *,
        progress: bool,
        max_in_flight: int | None,
        full: str,
    ) -> None:
        """Open the share of a churn at its instants, each closing after its cycle (none
        held); then send every attempt, and how many were open at once, at most."""
        self._progress = progress
        starts = ChurnStarts(max_in_flight, full or None)
        start: Mark | None = None

        def record(conn: int, at: float) -> Attempt:
            nonlocal start
            if start is None:
                start = self.monitor.mark()
            attempt = Attempt(Phase.SPIKE, conn, planned=at)
            self.attempts.append(attempt)
            return attempt

        async def cycle(attempt: Attempt) -> None:
            conn = await open_connection(self.spec, attempt, self.registry)
            self._count(attempt)
            await until_closed(conn)

        planned = ((at, conn) for at, conns in groups for conn in conns)
        loop = asyncio.get_running_loop()
        await starts.fire(planned, record, cycle, loop.create_task, lambda: self.abort_reason)
        end = self.monitor.mark()
        self.marks = (start or end, end)
        rows = [attempt_to_wire(a) for a in self.attempts]
        self.send(Attempts(run=self.run, attempts=rows, peak_in_flight=starts.peak_in_flight))

    async def _one(self, attempt: Attempt, armed: ArmedConnection | None) -> None:
        if armed is not None:
            conn: ClientConnection | None = await armed.complete()
        else:
            conn = await open_connection(self.spec, attempt, self.registry, keep_open=True)
        if conn is not None and attempt.outcome == Outcome.OK:
            self.conns.append(conn)
        self._count(attempt)

    def _count(self, attempt: Attempt) -> None:
        self._finished += 1
        if attempt.outcome != Outcome.OK:
            self._failed += 1
        if self._progress and not self._flush_pending:
            # One message per loop turn, however many attempts finished in it.
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_progress)

    def _flush_progress(self) -> None:
        self._flush_pending = False
        self.send(Progress(run=self.run, finished=self._finished, failed=self._failed))

    async def close_held(self) -> None:
        """Close the held connections with a closing handshake, within the close timeout."""
        for conn in self.conns:
            conn.close()
        waits = [c.wait_closed() for c in self.conns]
        if waits:
            try:
                async with asyncio.timeout(self.spec.close_timeout + 1.0):
                    await asyncio.gather(*waits)
            except TimeoutError:
                for conn in self.conns:
                    conn.abort()

    async def finish(self) -> WorkerHealth:
        """Close whatever is left of the share and report this process's health over it."""
        if self.fire_task is not None and not self.fire_task.done():
            self.fire_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.fire_task
        # As the daemon does with its own: a closing handshake first, bounded, then abort.
        await self.close_held()
        self.registry.abort_all()
        now = self.monitor.mark()
        since, until = self.marks or (now, now)
        return WorkerHealth.from_window(self.monitor.report(since, until))


class Worker:
    """Answer the daemon's messages; one :class:`ShareRun` per run in flight."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.runs: dict[str, ShareRun] = {}
        self.monitor: ProberMonitor | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def handle(self, message: DaemonMessage) -> None:
        """Act on one message from the daemon."""
        if isinstance(message, Prepare):
            self._prepare(message)
            return
        run = self.runs.get(message.run)
        if run is None:
            self.send(Failed(run=message.run, error=f"no run {message.run!r} here"))
        elif isinstance(message, Spike):
            # This worker's share of the daemon's free slots (limits.max_connections) and
            # of its receive budget (limits.max_receive_buffer_bytes).
            run.registry = ConnectionRegistry(
                _UNLIMITED if message.slots is None else message.slots,
                full=message.full if message.slots is not None else None,
                receive_budget_bytes=message.receive_budget_bytes or DEFAULT_RECEIVE_BUDGET_BYTES,
                receive_budget_named=message.receive_budget_named,
            )
            if message.churn:
                run.fire_task = self._spawn(
                    run.fire_churn(
                        message.groups,
                        progress=message.progress,
                        max_in_flight=message.max_in_flight,
                        full=message.in_flight_full,
                    )
                )
            else:
                run.fire_task = self._spawn(run.fire(message.groups, progress=message.progress))
        elif isinstance(message, Abort):
            run.abort_reason = message.reason
        elif isinstance(message, Close):
            self._spawn(self._close(run))
        else:
            self._spawn(self._finish(run))

    def _prepare(self, message: Prepare) -> None:
        try:
            target = target_from_wire(message.target)
            spec = build_connection_spec(target, message.address)
        except Exception as exc:  # noqa: BLE001 - any failure goes back to the daemon as text
            error = f"{type(exc).__name__}: {exc}"
            self.send(Failed(run=message.run, error=error))
            return
        if self.monitor is None:
            self.monitor = ProberMonitor(interval=message.lag_interval)
        self.monitor.start()
        self.runs[message.run] = ShareRun(message.run, spec, self.monitor, self.send)
        self.send(Prepared(run=message.run))

    async def _close(self, run: ShareRun) -> None:
        lost = losses(run.conns)
        await run.close_held()
        self.send(
            Closed(
                run=run.run,
                dropped=lost.dropped,
                drop_example=lost.example,
                lost_to_prober=lost.to_prober,
            )
        )

    async def _finish(self, run: ShareRun) -> None:
        health = await run.finish()
        self.runs.pop(run.run, None)
        assert self.monitor is not None
        self.monitor.stop()
        self.send(Health.of(run.run, health))

    async def shutdown(self, *, graceful: bool) -> None:
        """Close every run's connections (with closing handshakes when ``graceful``)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for run in list(self.runs.values()):
            if not graceful:
                run.registry.abort_all()
            await run.finish()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Serve the daemon until stdin ends or SIGTERM arrives; return the exit status."""
    loop = asyncio.get_running_loop()

    def send(message: WireMessage) -> None:
        if not writer.is_closing():
            writer.write(encode_message(message))

    worker = Worker(send)
    terminated = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, terminated.set)

    async def read_all() -> None:
        while (message := await read_message(reader, DAEMON_MESSAGES)) is not None:
            worker.handle(message)
            await writer.drain()

    reading = loop.create_task(read_all())
    stopping = loop.create_task(terminated.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if reading.done() and reading.exception() is not None:
        log.error("worker: bad message from the daemon: %s", reading.exception())
        status = 2
    reading.cancel()
    stopping.cancel()
    await worker.shutdown(graceful=terminated.is_set())
    return status


async def _main() -> int:
    loop = asyncio.get_running_loop()
    # Keep the protocol's pipe to ourselves: anything else printing to stdout (a stray
    # print, a C library) would corrupt it, so fd 1 becomes stderr from here on.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, out)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    status = await serve(reader, writer)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    return status


def main(argv: list[str] | None = None) -> int:
    """Run a worker on this process's stdin and stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="python -m spikewatch.engine.worker_main")
    parser.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for fd, name in ((0, "stdin"), (1, "stdout")):
        # The daemon gives pipes; libuv aborts the process on a character device (say
        # /dev/null) closing under a pipe handle, so refuse anything else plainly.
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            print(f"spikewatch worker: {name} must be a pipe from the daemon", file=sys.stderr)
            return 2
    freeze_long_lived()
    status: int = eventloop.run(_main(), args.event_loop)
    return status


if __name__ == "__main__":
    sys.exit(main())
