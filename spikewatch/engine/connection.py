"""One WebSocket client connection: an ``asyncio.Protocol`` over the sans-I/O core.

Every step is timed in the callback where it happens (``connection_made``,
``data_received``), not when some coroutine later resumes, so a busy event loop shows
up as start lateness and loop lag rather than as target latency. Timeouts are timer
handles (``loop.call_at``), not a task per connection.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import classify_connect_error
from spikewatch.core.outcomes import Outcome
from spikewatch.engine.clock import now as _now
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.errors import SpikewatchError
from spikewatch.protocol.frames import Close, Message, Ping, Pong
from spikewatch.protocol.handshake import new_key
from spikewatch.protocol.session import ClientSession, Failed, Rejected, State, Upgraded

# The probe's steps, in the order a healthy connection passes through them. The protocol's
# own state (open, closing, closed) is the session's; these say what the probe awaits.
_UPGRADE, _WELCOME, _ECHO, _OPEN, _CLOSING, _GONE = range(6)
_STEP_NAMES = {_UPGRADE: "the upgrade", _WELCOME: "the welcome", _ECHO: "the echo"}

#: How much of an unexpected message is kept as the example in the run's detail.
_EXAMPLE_CHARS = 120

#: Control frames (pings, pongs) a peer may send within one second before the connection
#: is failed as a flood. Servers ping every few seconds; thousands a second cost a parse
#: and a pong each and starve the loop that times every other connection (issue 12).
MAX_CONTROL_FRAMES_PER_SECOND = 1000


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How a held (stable) connection proves it is still alive."""

    interval: float
    timeout: float
    mode: Literal["ping", "echo"]
    on_rtt: Callable[[float], None]


class ClientConnection(asyncio.Protocol):
    """Drive one connection through upgrade, welcome and echo, then close or hold it.

    The asyncio glue around a :class:`~spikewatch.protocol.session.ClientSession`: it
    feeds the session what the transport reads, writes what the session has to send,
    stamps every event with the instant its bytes arrived, and keeps one timer.
    """

    __slots__ = (
        "_closed_waiter",
        "_connecting",
        "_control_count",
        "_control_since",
        "_deadline",
        "_echo_pattern",
        "_echo_sent",
        "_keepalive",
        "_keepalive_payload",
        "_loop",
        "_on_deadline",
        "_registry",
        "_session",
        "_slot_held",
        "_spec",
        "_state",
        "_timer",
        "_timer_at",
        "_transport",
        "_transport_gone",
        "_unmatched",
        "_upgraded_at",
        "attempt",
        "connect_expired",
        "done",
        "keep_open",
        "key",
        "lost_at",
        "lost_reason",
        "seq",
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
        self.keep_open = keep_open or keepalive is not None
        self._keepalive = keepalive
        self.key = new_key()
        # Built before the clock starts: minting a token is the prober's cost, not the target's.
        request, offered = spec.render_request(self.key, attempt.conn)
        self._session = ClientSession(
            request, self.key, offered, spec.max_message_bytes, registry.receive_budget
        )
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._state = _UPGRADE
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] = self._on_timeout
        self._upgraded_at = 0.0
        self._echo_sent = 0.0
        self._echo_pattern: re.Pattern[str] | None = None
        self._keepalive_payload = b""
        self._unmatched: str | None = None
        self._slot_held = True
        self._transport_gone = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self.seq = 0
        self.lost_at: float | None = None
        self.lost_reason: str | None = None
        self._connecting: asyncio.Task[object] | None = None
        self.connect_expired = False
        self._control_count = 0
        self._control_since = 0.0
        registry.track(self)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport is not a subclass of
        # asyncio.Transport, though it has the whole interface.
        transport = cast("asyncio.Transport", transport)
        self._transport = transport
        if self._state == _GONE:  # aborted while connecting
            transport.abort()
            return
        self._connecting = None  # the handshake deadline now times the upgrade
        transport.write(self._session.data_to_send())

    def data_received(self, data: bytes) -> None:
        now = _now()
        if self._state == _GONE:
            return
        session = self._session
        session.receive_data(data)
        for event in session.events_received():
            kind = type(event)
            if kind is Message:
                self._on_message(event.data, now)  # type: ignore[union-attr]
            elif kind is Upgraded:
                self._on_upgraded(now)
            elif kind is Pong:
                self._on_pong(event.payload, now)  # type: ignore[union-attr]
            elif kind is Close:
                self._on_close_frame(event)  # type: ignore[arg-type]
            elif kind is Rejected:
                self._on_rejected(event)  # type: ignore[arg-type]
            elif kind is Failed:
                self._on_failed(event)  # type: ignore[arg-type]
            if (kind is Ping or kind is Pong) and self._state != _GONE:
                # The session answers a ping; here it is only counted.
                self._count_control_frame(now)
            if self._state == _GONE:
                break
        if session.state == State.CLOSED:
            self._close_transport()
        else:
            self._flush()

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
        state = self._state
        self._state = _GONE
        if self.attempt.outcome is None:
            step = _STEP_NAMES.get(state, "the exchange")
            cause = f": {exc}" if exc else ""
            self._decide(Outcome.CLOSED, f"the peer closed the connection during {step}{cause}")
        elif state == _OPEN:
            self._mark_lost(f"connection lost{': ' + str(exc) if exc else ''}")

    # -- public controls ----------------------------------------------------------------

    def close(self) -> None:
        """Close a held connection with a closing handshake (RFC 6455 §7.1.2)."""
        if self._state == _OPEN:
            self._start_close(1000)
        elif self._state < _OPEN:
            self.abort()

    def abort(self) -> None:
        """Close at once; used on cancellation and shutdown."""
        self._decide(Outcome.ERROR, "cancelled before the attempt finished")
        self._cancel_timer()
        self._state = _GONE
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
        self._decide(outcome, detail)
        self._state = _GONE
        self._let_go()

    def arm_handshake_deadline(self, when: float, connecting: asyncio.Task[object]) -> None:
        """Start the one timer that bounds connect, TLS and upgrade together.

        Until the transport exists, its expiry cancels ``connecting`` (the task in
        ``create_connection``) and sets :attr:`connect_expired`; after that it is the
        upgrade's timeout. One timer handle per connection, not a timeout scope as well.
        """
        self._connecting = connecting
        self._rearm(when, self._on_handshake_deadline)

    def _on_handshake_deadline(self) -> None:
        connecting = self._connecting
        if connecting is not None and self._transport is None:
            self._timer = None
            self._connecting = None
            self.connect_expired = True
            connecting.cancel()
        else:
            self._on_timeout()

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
        return self._state == _OPEN

    # -- what the session reports -------------------------------------------------------

    def _on_upgraded(self, now: float) -> None:
        started = self.attempt.started
        assert started is not None
        self.attempt.handshake = now - started
        self._upgraded_at = now
        spec = self._spec
        if spec.welcome is not None:
            self._state = _WELCOME
            self._rearm(now + spec.welcome_timeout)
        else:
            self._start_echo_or_succeed(now)

    def _on_rejected(self, event: Rejected) -> None:
        response = event.response
        self.attempt.status = response.status
        reason = f" {response.reason}" if response.reason else ""
        self._fail(Outcome.HTTP_STATUS, f"upgrade answered {response.status}{reason}")

    def _on_failed(self, event: Failed) -> None:
        # The session has failed the connection (and sent its close frame when it could).
        if self.attempt.outcome is None:
            # Out of receive budget is the prober's limit, never the target's doing.
            self._fail(Outcome.ERROR if event.by_prober else Outcome.PROTOCOL_ERROR, event.detail)
        else:
            self._mark_lost(f"protocol error: {event.detail}")
            self._state = _GONE

    def _count_control_frame(self, now: float) -> None:
        if now - self._control_since >= 1.0:
            self._control_since = now
            self._control_count = 0
        self._control_count += 1
        if self._control_count > MAX_CONTROL_FRAMES_PER_SECOND:
            detail = f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
            self._session.send_close(1008)  # policy violation (RFC 6455 §7.4.1)
            if self.attempt.outcome is None:
                self._fail(Outcome.PROTOCOL_ERROR, detail)
            else:
                self._mark_lost(f"protocol error: {detail}")
                self._state = _GONE
                self._close_transport()

    def _on_message(self, data: str | bytes, now: float) -> None:
        state = self._state
        if state == _WELCOME:
            pattern = self._spec.welcome
            assert pattern is not None
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if pattern.search(text) is None:
                self._fail(
                    Outcome.UNEXPECTED_MESSAGE,
                    f"welcome did not match {pattern.pattern!r}: {text[:_EXAMPLE_CHARS]!r}",
                )
                return
            self.attempt.first_message = now - self._upgraded_at
            self._start_echo_or_succeed(now)
        elif state in (_ECHO, _OPEN) and self._echo_pattern is not None:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if self._echo_pattern.search(text) is None:
                # Other traffic (a broadcast, say) may precede the echo; judge at the timeout.
                self._unmatched = text[:_EXAMPLE_CHARS]
                return
            rtt = now - self._echo_sent
            self._echo_pattern = None
            self._unmatched = None
            if state == _ECHO:
                self.attempt.rtt = rtt
                self._succeed(now)
            else:
                self._keepalive_answered(rtt)

    def _on_pong(self, payload: bytes, now: float) -> None:
        if self._state == _OPEN and self._keepalive_payload and payload == self._keepalive_payload:
            self._keepalive_payload = b""
            self._keepalive_answered(now - self._echo_sent)

    def _on_close_frame(self, event: Close) -> None:
        # The session has answered it (RFC 6455 §5.5.1); the TCP connection ends next.
        state = self._state
        if state == _CLOSING:
            return
        code = "no code" if event.code is None else f"code {event.code}"
        reason = f" ({event.reason})" if event.reason else ""
        if self.attempt.outcome is None:
            step = _STEP_NAMES.get(state, "the exchange")
            self._fail(Outcome.CLOSED, f"the peer closed with {code}{reason} during {step}")
        else:
            self._mark_lost(f"the peer closed with {code}{reason}")
            self._state = _CLOSING

    # -- steps --------------------------------------------------------------------------

    def _start_echo_or_succeed(self, now: float) -> None:
        if self._spec.echo_payload is None:
            self._succeed(now)
            return
        self._state = _ECHO
        self._send_echo(now)
        self._rearm(now + self._spec.echo_timeout)

    def _send_echo(self, now: float) -> None:
        self.seq += 1
        text, self._echo_pattern = self._spec.echo_for(self.attempt.conn, self.seq)
        self._echo_sent = now
        self._session.send_text(text.encode())

    def _succeed(self, now: float) -> None:
        attempt = self.attempt
        started = attempt.started
        assert started is not None
        attempt.latency = now - started
        self._decide(Outcome.OK, "", now)
        self._cancel_timer()
        if self.keep_open:
            self._state = _OPEN
            if self._keepalive is not None:
                self._schedule_keepalive(now + self._keepalive.interval)
        else:
            self._start_close(1000)

    def _on_timeout(self) -> None:
        self._timer = None
        state = self._state
        spec = self._spec
        if state == _UPGRADE:
            self._fail(Outcome.TIMEOUT, f"no upgrade answer within {spec.handshake_timeout:g}s")
        elif state == _WELCOME:
            self._fail(Outcome.TIMEOUT, f"no welcome within {spec.welcome_timeout:g}s")
        elif state == _ECHO:
            if self._unmatched is not None:
                self._fail(
                    Outcome.UNEXPECTED_MESSAGE,
                    f"no message matched the echo pattern within {spec.echo_timeout:g}s; "
                    f"last one: {self._unmatched!r}",
                )
            else:
                self._fail(Outcome.TIMEOUT, f"no echo answer within {spec.echo_timeout:g}s")

    # -- held connections ---------------------------------------------------------------

    def _schedule_keepalive(self, when: float) -> None:
        self._rearm(when, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        self._timer = None
        keepalive = self._keepalive
        if keepalive is None or self._state != _OPEN:
            return
        now = _now()
        if keepalive.mode == "echo":
            self._send_echo(now)
        else:
            self.seq += 1
            self._keepalive_payload = self.seq.to_bytes(8, "big")
            self._echo_sent = now
            self._session.send_ping(self._keepalive_payload)
        self._flush()
        self._rearm(now + keepalive.timeout, self._keepalive_timeout)

    def _keepalive_answered(self, rtt: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        keepalive.on_rtt(rtt)
        # Keep the cadence from when the ping was sent, not from when it was answered.
        self._schedule_keepalive(max(_now(), self._echo_sent + keepalive.interval))

    def _keepalive_timeout(self) -> None:
        self._timer = None
        keepalive = self._keepalive
        assert keepalive is not None
        what = "echo" if keepalive.mode == "echo" else "pong"
        self._mark_lost(f"no {what} within {keepalive.timeout:g}s")
        self._start_close(1001)

    def _mark_lost(self, reason: str) -> None:
        if self.lost_at is None:
            self.lost_at = _now()
            self.lost_reason = reason

    # -- endings ------------------------------------------------------------------------

    def _decide(self, outcome: Outcome, detail: str, now: float | None = None) -> None:
        if self.attempt.decide(outcome, detail, _now() if now is None else now):
            done = self.done
            if not done.done():
                done.set_result(None)

    def _fail(self, outcome: Outcome, detail: str) -> None:
        self._decide(outcome, detail)
        self._cancel_timer()
        if self._state in (_WELCOME, _ECHO) and outcome != Outcome.CLOSED:
            self._session.send_close(1008 if outcome == Outcome.UNEXPECTED_MESSAGE else 1001)
        self._state = _GONE
        self._close_transport()

    def _start_close(self, code: int) -> None:
        self._state = _CLOSING
        self._session.send_close(code)
        self._flush()
        # Wait for the server's close frame (it closes TCP first, §7.1.1), but not forever.
        self._rearm(_now() + self._spec.close_timeout, self._abort_transport)

    def _flush(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            data = self._session.data_to_send()
            if data:
                transport.write(data)

    def _close_transport(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._flush()
            transport.close()
            # A peer that reads nothing never lets the close finish: abort it in time.
            self._rearm(_now() + self._spec.close_timeout, self._abort_transport)

    def _abort_transport(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def _rearm(self, when: float, callback: Callable[[], None] | None = None) -> None:
        """Make ``callback`` (the step's timeout by default) run at ``when``.

        One timer handle serves every deadline of the connection: a later deadline than
        the one the timer is set for only moves ``_deadline`` (the timer, when it fires,
        sets itself again for the rest), so a healthy cycle creates one timer instead of
        one per step.
        """
        self._deadline = when
        self._on_deadline = callback or self._on_timeout
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
        self._on_deadline()

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
        attempt.decide(Outcome.ERROR, f"cannot prepare the request: {exc}", now)
        return None
    task = asyncio.current_task()
    assert task is not None
    started = _now()
    attempt.started = started
    conn.arm_handshake_deadline(started + spec.handshake_timeout, task)
    try:
        await loop.create_connection(
            lambda: conn,
            spec.address,
            spec.port,
            ssl=spec.ssl,
            server_hostname=spec.server_hostname,
        )
    except asyncio.CancelledError:
        # Our deadline's cancel is a timeout; any other cancel (shutdown) goes on up.
        if not conn.connect_expired or task.uncancel() > 0:
            conn.abort()
            raise
        what = "TCP/TLS connection" if spec.ssl is not None else "TCP connection"
        conn.connect_failed(Outcome.TIMEOUT, f"no {what} within {spec.handshake_timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - every connect failure becomes a classified outcome
        conn.connect_failed(*classify_connect_error(exc, tls=spec.ssl is not None))
    try:
        await conn.done
    except asyncio.CancelledError:
        conn.abort()
        raise
    return conn
