"""One WebSocket client connection: the asyncio glue around the sans-I/O core.

The protocol is the session's (``protocol/session.py``), the probe's steps and its
outcome the exchange's (``protocol/exchange.py``); this module feeds them what the
transport reads, writes what the session has to send, keeps one timer, and gives the
connection's slot back. Every event is timed in the callback where its bytes arrive
(``data_received``), not when some coroutine later resumes, so a busy event loop shows
up as start lateness and loop lag rather than as target latency. Timeouts are timer
handles (``loop.call_at``), not a task per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, cast

from spikewatch.core.attempt import DEFLATE_DECLINED, Attempt
from spikewatch.core.classify import classify_connect_error, lost_to_prober
from spikewatch.core.outcomes import Outcome
from spikewatch.engine.clock import now as _now
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.errors import SpikewatchError
from spikewatch.protocol.exchange import (
    MAX_CONTROL_FRAMES_PER_SECOND,
    Keepalive,
    ProbeExchange,
    Step,
)
from spikewatch.protocol.frames import Close, Message, Ping, Pong
from spikewatch.protocol.handshake import new_key
from spikewatch.protocol.session import ClientSession, Failed, Rejected, Upgraded

__all__ = [
    "MAX_CONTROL_FRAMES_PER_SECOND",
    "ClientConnection",
    "Keepalive",
    "Losses",
    "losses",
    "open_connection",
]

#: The write buffer past which pongs stop (``pause_writing``). What a probe writes is a
#: few hundred bytes; only a peer that reads nothing fills it, and then it is all the
#: memory that peer can make a connection hold on the sending side (issue 12).
WRITE_BUFFER_HIGH_WATER = 16 * 1024

_OVER = Step.OVER
_CLOSING = Step.CLOSING
_HELD = Step.HELD


class ClientConnection(asyncio.Protocol):
    """Drive one connection through upgrade, welcome and echo, then close or hold it."""

    __slots__ = (
        "_abort_at",
        "_callback",
        "_closed_waiter",
        "_connecting",
        "_deadline",
        "_exchange",
        "_loop",
        "_registry",
        "_session",
        "_slot_held",
        "_spec",
        "_timer",
        "_timer_at",
        "_transport",
        "_transport_gone",
        "attempt",
        "connect_expired",
        "done",
        "key",
        "version",
    )

    def __init__(
        self,
        spec: ConnectionSpec,
        attempt: Attempt,
        loop: asyncio.AbstractEventLoop,
        registry: ConnectionRegistry,
        *,
        keep_open: bool = False,
        keepalive: Keepalive | None = None,
    ) -> None:
        self._spec = spec
        self._loop = loop
        self._registry = registry
        self.attempt = attempt
        self.key = new_key()
        # Built before the clock starts: minting a token is the prober's cost, not the target's.
        request, offered = spec.render_request(self.key, attempt.conn)
        session = ClientSession(
            request,
            self.key,
            offered,
            spec.max_message_bytes,
            registry.receive_budget,
            deflate=spec.deflate,
        )
        self._session = session
        self._exchange = ProbeExchange(
            attempt, session, spec, keep_open=keep_open, keepalive=keepalive
        )
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._callback = self._on_step_deadline
        self._abort_at = 0.0
        self._slot_held = True
        self._transport_gone = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._connecting: asyncio.Task[object] | None = None
        self.connect_expired = False
        #: The target's version header in the 101 answer (when the spec names one).
        self.version: str | None = None
        registry.track(self)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport is not a subclass of
        # asyncio.Transport, though it has the whole interface.
        transport = cast("asyncio.Transport", transport)
        self._transport = transport
        if self._exchange.step == _OVER:  # aborted while connecting
            transport.abort()
            return
        self._connecting = None  # the handshake deadline now times the upgrade
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_WATER)
        transport.write(self._session.data_to_send())

    def data_received(self, data: bytes, now: float = 0.0) -> None:
        # ``now``: when the bytes arrived, if earlier (an armed connection's first reads).
        if not now:
            now = _now()
        exchange = self._exchange
        if exchange.step == _OVER:
            return
        session = self._session
        session.receive_data(data)
        for event in session.events_received():
            kind = type(event)
            if kind is Message:
                exchange.message(event.data, now)  # type: ignore[union-attr]
            elif kind is Upgraded:
                if session.deflate_declined:
                    self.attempt.detail = DEFLATE_DECLINED  # kept if it succeeds
                exchange.upgraded(now)
                if self._spec.version_header is not None:
                    self.version = event.response.header(self._spec.version_header)  # type: ignore[union-attr]
            elif kind is Ping:
                exchange.control_frame(now)  # the session answers it
            elif kind is Pong:
                exchange.pong(event.payload, now)  # type: ignore[union-attr]
                exchange.control_frame(now)
            elif kind is Close:
                exchange.peer_closed(event, now)  # type: ignore[arg-type]
            elif kind is Rejected:
                exchange.rejected(event.response, now)  # type: ignore[union-attr]
            elif kind is Failed:
                exchange.failed(event.detail, now, by_prober=event.by_prober)  # type: ignore[union-attr]
            if exchange.step == _OVER:
                break
        self._advance(now)

    def pause_writing(self) -> None:
        # The peer reads nothing and our buffer is past its high-water mark: stop queueing
        # pongs it will never read, or a ping flood grows our memory without bound.
        self._session.answer_pings = False

    def resume_writing(self) -> None:
        self._session.answer_pings = True

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost classifies

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._transport_gone = True
        self._session.receive_eof()
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        self._let_go()
        self._exchange.connection_lost(f": {exc}" if exc else "", _now())
        self._settle()

    @property
    def captures(self) -> Mapping[str, str]:
        """The conversation's captures so far (the target's version may be one)."""
        return self._exchange.captures

    # -- public controls ----------------------------------------------------------------

    def close(self) -> None:
        """Close a held connection with a closing handshake (RFC 6455 §7.1.2)."""
        step = self._exchange.step
        if step == _HELD:
            now = _now()
            self._exchange.close(now)
            self._advance(now)
        elif step < _HELD:
            self.abort()

    def abort(self) -> None:
        """Close at once; used on cancellation and shutdown."""
        self._exchange.ended(Outcome.ERROR, "cancelled before the attempt finished", _now())
        self._settle()
        self._cancel_timer()
        connecting, self._connecting = self._connecting, None
        if connecting is not None and connecting is not asyncio.current_task():
            # Still in create_connection, whose only bound was the timer just cancelled.
            connecting.cancel()
        self._let_go()
        if self._transport is not None:
            self._transport.abort()

    def connect_failed(self, outcome: Outcome, detail: str) -> None:
        """Record a failure of the TCP connect or TLS handshake (no transport exists)."""
        self._cancel_timer()
        self._connecting = None
        self._exchange.ended(outcome, detail, _now(), step="connect")
        self._settle()
        self._let_go()

    def connect_raised(self, exc: BaseException, task: asyncio.Task[object] | None = None) -> None:
        """Record how a connect that raised ``exc`` ended (no transport exists).

        A cancel of ``task`` (the one in the TCP connect or TLS handshake) by this
        connection's own handshake deadline is a timeout; any other cancel (a shutdown)
        aborts the attempt and is raised again; any other error is classified (refused,
        reset, TLS, ...). Either way the attempt is settled and its slot given back.
        """
        if not isinstance(exc, asyncio.CancelledError):
            self.connect_failed(*classify_connect_error(exc, tls=self._spec.ssl is not None))
        elif self.connect_expired and task is not None and task.uncancel() == 0:
            self.connect_timed_out()
        else:
            self.abort()
            raise exc

    def connect_timed_out(self) -> None:
        """Record that the handshake deadline passed before the TCP (or TLS) connection."""
        what = "TCP/TLS connection" if self._spec.ssl is not None else "TCP connection"
        self.connect_failed(Outcome.TIMEOUT, f"no {what} within {self._spec.handshake_timeout:g}s")

    def start(self, connecting: asyncio.Task[object]) -> None:
        """The connect starts now: arm the one timer that bounds connect, TLS and upgrade.

        Until the transport exists, its expiry cancels ``connecting`` (the task in
        ``create_connection``) and sets :attr:`connect_expired`; after that it is the
        upgrade's timeout. One timer handle per connection, not a timeout scope as well.
        """
        self._exchange.started(_now())
        self._connecting = connecting
        self._rearm(self._exchange.deadline, self._on_handshake_deadline)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is gone (or was never made)."""
        if self._transport is None or self._transport_gone:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await self._closed_waiter

    @property
    def is_open(self) -> bool:
        """Whether the connection is established and held."""
        return self._exchange.step == _HELD

    @property
    def keep_open(self) -> bool:
        """Whether a successful connection is held open rather than closed."""
        return self._exchange.keep_open

    @property
    def lost_at(self) -> float | None:
        """When a held connection was lost, if it was."""
        return self._exchange.lost_at

    @property
    def lost_reason(self) -> str | None:
        """Why a held connection was lost, if it was."""
        return self._exchange.lost_reason

    @property
    def keepalive_unanswered(self) -> bool:
        """Whether the last keepalive ping (or echo) of a held connection is unanswered."""
        return self._exchange.awaiting_answer

    @property
    def seq(self) -> int:
        """How many echoes or keepalive pings this connection has sent."""
        return self._exchange.seq

    # -- doing what the exchange's step asks of the transport ----------------------------

    def _advance(self, now: float) -> None:
        # Inlined _settle and _flush: this runs after every read, on the hot path.
        if self.attempt.outcome is not None and not self.done.done():
            self.done.set_result(None)
        step = self._exchange.step
        if step == _OVER:
            self._close_transport(now)
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            data = self._session.data_to_send()
            if data:
                transport.write(data)
        if step == _CLOSING:
            if not self._abort_at:
                # Wait for the server's close frame (it closes TCP first, RFC 6455 §7.1.1),
                # but not forever.
                self._abort_at = now + self._spec.close_timeout
                self._rearm(self._abort_at, self._abort_transport)
        else:
            deadline = self._exchange.deadline
            if deadline:
                self._rearm(deadline, self._on_step_deadline)
            else:
                self._cancel_timer()

    def _settle(self) -> None:
        if self.attempt.outcome is not None:
            done = self.done
            if not done.done():
                done.set_result(None)

    def _on_step_deadline(self) -> None:
        now = _now()
        self._exchange.expired(now)
        self._advance(now)

    def _on_handshake_deadline(self) -> None:
        connecting = self._connecting
        if connecting is not None and self._transport is None:
            self._connecting = None
            self.connect_expired = True
            connecting.cancel()
        else:
            self._on_step_deadline()

    def _flush(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            data = self._session.data_to_send()
            if data:
                transport.write(data)

    def _close_transport(self, now: float) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._flush()
            transport.close()
            # A peer that reads nothing never lets the close finish: abort it in time.
            self._abort_at = now + self._spec.close_timeout
            self._rearm(self._abort_at, self._abort_transport)
        elif transport is None:
            self._cancel_timer()

    def _abort_transport(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _rearm(self, when: float, callback: Callable[[], None]) -> None:
        """Make ``callback`` run at ``when``.

        One timer handle serves every deadline of the connection: a later deadline than
        the one the timer is set for only moves ``_deadline`` (the timer, when it fires,
        sets itself again for the rest), so a healthy cycle creates one timer instead of
        one per step.
        """
        self._deadline = when
        self._callback = callback
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadline > self._timer_at:  # the deadline moved later meanwhile
            self._timer_at = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        self._callback()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _let_go(self) -> None:
        """Give the slot back and leave the registry; whoever ends the attempt calls it.

        Not left to ``connection_lost`` alone: uvloop closes the transport of a connect
        cut short (a cancel, a deadline) without calling it, and the slot would be held
        forever (issue 12). Idempotent.
        """
        if self._slot_held:
            self._slot_held = False
            self._session.release()
            self._registry.forget(self)
            self._registry.release()


class Losses(NamedTuple):
    """Held connections lost: those the target dropped (with why the first was), and
    those the prober's own receive budget closed, which are not the target's doing."""

    dropped: int = 0
    example: str | None = None
    to_prober: int = 0


def losses(conns: Iterable[ClientConnection]) -> Losses:
    """Count the held connections that were lost, by whose doing."""
    dropped, example, to_prober = 0, None, 0
    for conn in conns:
        if conn.lost_at is None:
            continue
        reason = conn.lost_reason or ""
        if lost_to_prober(reason):
            to_prober += 1
        else:
            dropped += 1
            example = example if example is not None else reason
    return Losses(dropped, example, to_prober)


async def open_connection(
    spec: ConnectionSpec,
    attempt: Attempt,
    registry: ConnectionRegistry,
    *,
    keep_open: bool = False,
    keepalive: Keepalive | None = None,
    reserve: int = 0,
) -> ClientConnection | None:
    """Make one attempt and wait until its outcome is decided.

    Return the connection (held open when ``keep_open`` and it succeeded), or None when
    no attempt was made (no free slot, or no credential could be minted).
    """
    loop = asyncio.get_running_loop()
    if not registry.try_acquire(reserve):
        attempt.abort(_now(), registry.full_reason(reserve))
        return None
    try:
        conn = ClientConnection(
            spec, attempt, loop, registry, keep_open=keep_open, keepalive=keepalive
        )
    except SpikewatchError as exc:
        registry.release()
        now = _now()
        attempt.started = now
        attempt.decide(Outcome.ERROR, f"cannot prepare the request: {exc}", now, "connect")
        return None
    task = asyncio.current_task()
    assert task is not None
    conn.start(task)
    try:
        await loop.create_connection(
            lambda: conn,
            spec.address,
            spec.port,
            ssl=spec.ssl,
            server_hostname=spec.server_hostname,
        )
    except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - every connect failure becomes an outcome
        conn.connect_raised(exc, task)  # raises a cancel that is not our deadline's
    try:
        await conn.done
    except asyncio.CancelledError:
        conn.abort()
        raise
    return conn
