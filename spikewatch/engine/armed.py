"""Pre-armed spike batches: everything but ``connect()`` done before the instant.

A batch planned for one instant starts as close to it as the kernel allows when the
instant itself costs only system calls. So ahead of it (at most :data:`ARM_AHEAD`
seconds, at most :data:`ARM_LIMIT` connections at once) each connection of the batch is
*armed*: its slot taken, its key, request (and JWT), session and exchange built, its
socket made and set non-blocking. At the instant each is stamped and gets ``connect()``
and, on plain ``ws://``, its upgrade request written straight on the socket (on loopback
the handshake has completed when ``connect()`` returns); a refused connect ends there.
Only once the whole batch is out does each socket get its transport. What the target
answered meanwhile waited in the kernel, stamped by it on arrival (``SO_TIMESTAMPNS``),
and is parsed then at that stamp, so the handshake and the welcome are timed when their
bytes arrived, not when the prober got round to them; an echo they cue goes out when it
is parsed, and its round trip and timeout start then. A handshake deadline that passes
before the transport reads what had arrived by then first. On ``wss://`` the transport
(the TLS handshake) starts right after each chunk of connects instead.

An attempt that cannot be armed (no free slot yet, no descriptor) is opened the usual way
at the instant (``open_connection``), which records why it failed if it does.
An armed connection never started (the abort rule, a cancel, the run's end) is aborted like
any other: its socket closed, its slot given back.
"""

from __future__ import annotations

import asyncio
import atexit
import errno
import os
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome
from spikewatch.engine.clock import now as _now
from spikewatch.engine.connection import ClientConnection
from spikewatch.engine.launch import launch
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.protocol.exchange import Step

__all__ = [
    "ARM_AHEAD",
    "ARM_LIMIT",
    "ArmedBatch",
    "ArmedConnection",
    "arm_connection",
    "keep_arrival_stamps",
]

#: A batch is armed at most this long before its instant (seconds).
ARM_AHEAD = 1.0
#: At most this many connections are armed and not yet started at once; the rest of a
#: bigger batch is opened the usual way. An armed connection holds what it will hold
#: once started (a descriptor, ~3 KiB of objects), only earlier.
ARM_LIMIT = 10_000
#: Connections armed per loop iteration (~30 µs each), so that arming never holds the loop.
ARM_CHUNK = 64
#: Connections started per loop iteration at the instant: ~15-20 µs each on loopback, so
#: the loop polls (timers, other runs) every ~1 ms of a batch.
FIRE_CHUNK = 64

#: What an armed connection's first read takes at once, and room for its kernel stamp.
_PULL_BYTES = 65536
_STAMP_SPACE = socket.CMSG_SPACE(16)  # a struct timespec
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # SCM_TIMESTAMPNS is the same
_CONNECTING = (errno.EINPROGRESS, errno.EALREADY, errno.EAGAIN)

_OVER = Step.OVER

#: A socket kept for the process's life with receive stamps on (see keep_arrival_stamps).
_stamp_keeper: list[socket.socket] = []

Start = Callable[[Attempt, "ArmedConnection | None"], Coroutine[Any, Any, None]]


class ArmedConnection(ClientConnection):
    """A connection built ahead of its instant; :meth:`fire` starts it, :meth:`complete`
    hands its socket to a transport and waits for the outcome."""

    __slots__ = ("_handed", "_shift", "_sock", "_unsent", "_wired")

    def __init__(
        self,
        spec: ConnectionSpec,
        attempt: Attempt,
        loop: asyncio.AbstractEventLoop,
        registry: ConnectionRegistry,
        sock: socket.socket,
        *,
        keep_open: bool = False,
    ) -> None:
        super().__init__(spec, attempt, loop, registry, keep_open=keep_open)
        #: The socket while it is this connection's to close; then the transport's.
        self._sock: socket.socket | None = sock
        self._handed: socket.socket | None = None  # handed over, not yet read from
        self._unsent = b""  # what the socket did not take of the request at the instant
        self._wired = False  # known to be connected (the request went out on it)
        self._shift = 0.0  # how much later than its cue the echo went out

    @property
    def fired(self) -> bool:
        """Whether the connect has started."""
        return self.attempt.started is not None

    def fire(self) -> None:
        """Start now: stamp, ``connect()`` and (plain ``ws://``) the upgrade request."""
        sock = self._sock
        assert sock is not None
        spec = self._spec
        exchange = self._exchange
        exchange.started(_now())
        self._rearm(exchange.deadline, self._on_handshake_deadline)
        err = sock.connect_ex((spec.address, spec.port))
        if err and err not in _CONNECTING:
            self.connect_raised(OSError(err, os.strerror(err)))
            return
        if spec.ssl is None:
            data = self._session.data_to_send()
            try:
                sent = sock.send(data)
            except BlockingIOError:  # still connecting: the transport writes it
                sent = 0
            except OSError as exc:  # the connect failed (refused at once, say)
                self.connect_raised(exc)
                return
            self._wired = sent > 0
            self._unsent = data[sent:]

    async def complete(self) -> ArmedConnection:
        """After :meth:`fire`: hand the socket to a transport, wait for the outcome."""
        sock = self._sock
        if sock is not None and self._exchange.step != _OVER:
            task = asyncio.current_task()
            assert task is not None
            self._connecting = task
            spec = self._spec
            try:
                if not self._wired:
                    await self._connected(sock)
                # From here the transport closes it, whatever happens.
                self._sock, self._handed = None, sock
                await self._loop.create_connection(
                    lambda: self, sock=sock, ssl=spec.ssl, server_hostname=spec.server_hostname
                )
                if self._transport_gone:
                    # Closed already (connection_made read a 503, say): uvloop closed the
                    # descriptor, then gave the socket object to the closed transport,
                    # which never lets go of it; collected, it would close that number
                    # again, another connection's by then (a hang, EBADF, libuv's abort).
                    sock.detach()
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - every connect failure becomes an outcome
                self.connect_raised(exc, task)  # raises a cancel that is not our deadline's
        self._drop_socket()  # ended before its transport: the socket is still ours
        try:
            await self.done
        except asyncio.CancelledError:
            self.abort()
            raise
        if self._shift and self.attempt.rtt is not None:
            self.attempt.rtt -= self._shift
        return self

    # -- the base class's steps, with the socket it does not know about ---------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock, self._handed = self._handed, None
        if sock is None or self._exchange.step == _OVER:
            return
        unsent, self._unsent = self._unsent, b""
        if unsent:
            cast("asyncio.Transport", transport).write(unsent)
        self._pull(sock)

    def abort(self) -> None:
        super().abort()
        self._drop_socket()

    def connect_failed(self, outcome: Outcome, detail: str) -> None:
        super().connect_failed(outcome, detail)
        self._drop_socket()

    def _close_transport(self, now: float) -> None:
        super()._close_transport(now)
        if self._transport is None:
            # Over before it had a transport (decided at the handshake deadline, by what
            # had arrived or had not): no connection_lost will come to give the slot back.
            self._drop_socket()
            self._let_go()

    def _on_handshake_deadline(self) -> None:
        sock = self._sock
        if sock is not None and self._connecting is None:
            # Fired, not handed to a transport yet: what had arrived by now counts.
            self._pull(sock)
            step = self._exchange.step
            if step != Step.UPGRADE:
                return  # it answered in time (or failed): the exchange has moved on
            if not self._wired:
                self.connect_timed_out()
                return
        super()._on_handshake_deadline()

    # -- helpers -------------------------------------------------------------------------

    async def _connected(self, sock: socket.socket) -> None:
        """Wait until the socket's connect has finished; raise its error if it failed."""
        _raise_connect_error(sock)
        try:
            sock.getpeername()
        except OSError:  # still connecting: wait until the socket is writable
            loop = self._loop
            writable: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()
            loop.add_writer(fd, _set_once, writable)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
            _raise_connect_error(sock)
            sock.getpeername()  # writable and no error: connected (else this raises)
        self._wired = True

    def _pull(self, sock: socket.socket) -> None:
        """Read what reached the socket before its transport did, at its arrival time.

        The kernel stamps each segment as it arrives (wall clock); the stamp is carried
        over to the monotonic clock and kept between the connect's start and now. Errors
        and the end of the stream are left for the transport to read.
        """
        exchange = self._exchange
        started = self.attempt.started or 0.0
        while exchange.step != _OVER:
            try:
                data, ancdata, _, _ = sock.recvmsg(_PULL_BYTES, _STAMP_SPACE)
            except OSError:
                return
            if not data:
                return
            now = _now()
            arrived = now
            # The one control message a TCP read can carry here is the SCM_TIMESTAMPNS
            # this socket asked for (arm_connection): a struct timespec, two 64-bit fields.
            for _, _, stamp in ancdata:
                seconds, nanoseconds = struct.unpack("qq", stamp)
                ago = time.time() - (seconds + nanoseconds * 1e-9)
                arrived = min(now, max(started, now - ago))
            seq = exchange.seq
            self.data_received(data, arrived)
            if exchange.seq != seq and exchange.deadline and arrived < now:
                # The echo its cue asked for went out now, not when the cue arrived.
                self._shift += now - arrived
                exchange.deadline += now - arrived
                self._rearm(exchange.deadline, self._on_step_deadline)
            if len(data) < _PULL_BYTES:
                return

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def keep_arrival_stamps() -> None:
    """Keep the kernel stamping what arrives, from now on, for the process's life.

    Linux turns receive stamps on for the whole host when the first socket asks for them,
    but later (from a work queue), and off again when the last one closes: a batch armed
    and fired at once could find its first answers unstamped. One UDP socket that asks
    and stays open keeps them on. Idempotent; without it answers are stamped when read.
    """
    if not _stamp_keeper:
        keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        keeper.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        _stamp_keeper.append(keeper)
        atexit.register(keeper.close)


def _set_once(future: asyncio.Future[None]) -> None:
    # Done already when its task was cancelled earlier in the loop turn that found the
    # socket writable: the waiter's remove_writer comes only when that task resumes.
    if not future.done():
        future.set_result(None)


def _raise_connect_error(sock: socket.socket) -> None:
    """Raise the error a non-blocking connect ended with, if it failed."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


def arm_connection(
    spec: ConnectionSpec,
    attempt: Attempt,
    registry: ConnectionRegistry,
    *,
    keep_open: bool = False,
    reserve: int = 0,
) -> ArmedConnection | None:
    """Arm ``attempt``'s connection: slot, socket, key, request, session; None if it cannot."""
    if not registry.try_acquire(reserve):
        return None
    try:
        family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        registry.release()
        return None
    sock.setblocking(False)
    if spec.ssl is None:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    loop = asyncio.get_running_loop()
    return ArmedConnection(spec, attempt, loop, registry, sock, keep_open=keep_open)


class ArmedBatch:
    """One batch's attempts, armed ahead of their instant, then fired together."""

    def __init__(self, attempts: Sequence[Attempt]) -> None:
        self.attempts = list(attempts)
        #: Each attempt's armed connection, or None where it could not be armed.
        self.conns: list[ArmedConnection | None] = []

    @property
    def armed(self) -> int:
        """How many connections are armed and not started."""
        return sum(1 for c in self.conns if c is not None and not c.fired)

    async def arm(
        self,
        spec: ConnectionSpec,
        registry: ConnectionRegistry,
        *,
        reserve: int = 0,
        limit: int = ARM_LIMIT,
    ) -> None:
        """Arm the batch, :data:`ARM_CHUNK` per loop iteration, at most ``limit`` of it."""
        if spec.ssl is None:
            keep_arrival_stamps()
        try:
            for index, attempt in enumerate(self.attempts):
                if index and index % ARM_CHUNK == 0:
                    await asyncio.sleep(0)
                conn = None
                if index < limit:
                    conn = arm_connection(spec, attempt, registry, keep_open=True, reserve=reserve)
                self.conns.append(conn)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Abort every connection armed and not started: socket closed, slot given back."""
        for conn in self.conns:
            if conn is not None and not conn.fired:
                conn.abort()

    async def fire(
        self,
        planned: float,
        start: Start,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        *,
        tls: bool = False,
    ) -> list[asyncio.Task[None]]:
        """Start the batch now (``planned`` is its instant); return its tasks.

        The armed connections first, :data:`FIRE_CHUNK` per loop iteration; then those
        that could not be armed, the usual way; then the armed ones get their transports
        (on TLS, right after each chunk). ``start(attempt, conn)`` completes one attempt.
        """
        conns = self.conns + [None] * (len(self.attempts) - len(self.conns))
        for attempt in self.attempts:
            attempt.planned = planned
        tasks: list[asyncio.Task[None]] = []
        fired: list[tuple[Attempt, ArmedConnection | None]] = []
        try:
            count = 0
            for attempt, conn in zip(self.attempts, conns, strict=True):
                if conn is None:
                    continue
                if count and count % FIRE_CHUNK == 0:
                    if tls:
                        tasks.extend(spawn(start(*pair)) for pair in fired)
                        fired = []
                    await asyncio.sleep(0)
                count += 1
                conn.fire()
                fired.append((attempt, conn))
            unarmed = [(a, None) for a, c in zip(self.attempts, conns, strict=True) if c is None]
            tasks.extend(await launch([*unarmed, *fired], lambda pair: start(*pair), spawn))
            # Let the last chunk take its first step, so that those not armed have their
            # slots before the next batch is armed (the slot is taken in that step).
            await asyncio.sleep(0)
        except BaseException:
            # Cancelled mid-batch: end what was started and release what was not.
            for task in tasks:
                task.cancel()
            for conn in self.conns:
                if conn is not None:
                    conn.abort()
            raise
        return tasks
