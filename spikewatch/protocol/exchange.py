"""What a probe connection is for, sans I/O: the welcome, the echo, the keepalive.

The session (``session.py``) keeps the WebSocket protocol; this keeps the probe's steps
on top of it and is the one writer of the attempt's outcome and measurements. The engine
hands it each session event with the instant its bytes arrived, and calls :meth:`expired`
when :attr:`ProbeExchange.deadline` passes; what the exchange sends goes through the
session. Nothing here reads a clock or touches a socket.

Steps, in the order a healthy connection passes through them::

    UPGRADE -> WELCOME -> ECHO -> CLOSING (our close frame out) -> OVER
                                \\-> HELD (keep_open; keepalive) --^

``OVER`` means the engine closes the TCP connection now (a failure, a close frame from
the peer); ``CLOSING`` means it waits for the peer's close, within ``close_timeout``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, Protocol

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome
from spikewatch.protocol.frames import Close
from spikewatch.protocol.handshake import UpgradeResponse
from spikewatch.protocol.session import ClientSession

#: How much of an unexpected message is kept as the example in the run's detail.
EXAMPLE_CHARS = 120

#: Control frames (pings, pongs) a peer may send within one second before the connection
#: is failed as a flood. Servers ping every few seconds; thousands a second cost a parse
#: and a pong each and starve the loop that times every other connection (issue 12).
MAX_CONTROL_FRAMES_PER_SECOND = 1000


class Step(IntEnum):
    """What the probe awaits."""

    UPGRADE = 0
    WELCOME = 1
    ECHO = 2
    HELD = 3
    CLOSING = 4
    OVER = 5


#: The step an attempt failed in, as the run's ``errors`` name it, and as details say it.
_STEP_LABELS = {Step.UPGRADE: "upgrade", Step.WELCOME: "welcome", Step.ECHO: "echo"}
_STEP_NAMES = {step: f"the {label}" for step, label in _STEP_LABELS.items()}
#: Steps that await a message the probe expects; a failure there sends a close frame.
_EXPECTING = frozenset((Step.WELCOME, Step.ECHO))
#: Steps in which an echo may be outstanding (the probe's, or an echo keepalive's).
_AWAITING_ECHO = frozenset((Step.ECHO, Step.HELD))


class Expectations(Protocol):
    """What a probe expects of its target (``engine.spec.ConnectionSpec`` provides it)."""

    @property
    def handshake_timeout(self) -> float: ...
    @property
    def welcome(self) -> re.Pattern[str] | None: ...
    @property
    def welcome_timeout(self) -> float: ...
    @property
    def echo_payload(self) -> str | None: ...
    @property
    def echo_timeout(self) -> float: ...

    def echo_for(self, conn: int, seq: int) -> tuple[str, re.Pattern[str]]:
        """Return the echo payload for message ``seq`` of ``conn`` and its pattern."""


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How a held (stable) connection proves it is still alive."""

    interval: float
    timeout: float
    mode: Literal["ping", "echo"]
    on_rtt: Callable[[float], None]


class ProbeExchange:
    """One probe's steps over one session, deciding its attempt."""

    __slots__ = (
        "_awaiting",
        "_control_count",
        "_control_since",
        "_echo_pattern",
        "_echo_sent",
        "_expect",
        "_keepalive",
        "_keepalive_payload",
        "_unmatched",
        "_upgraded_at",
        "attempt",
        "deadline",
        "keep_open",
        "lost_at",
        "lost_reason",
        "seq",
        "session",
        "step",
    )

    def __init__(
        self,
        attempt: Attempt,
        session: ClientSession,
        expect: Expectations,
        *,
        keep_open: bool = False,
        keepalive: Keepalive | None = None,
    ) -> None:
        self.attempt = attempt
        self.session = session
        self._expect = expect
        self.keep_open = keep_open or keepalive is not None
        self._keepalive = keepalive
        self.step = Step.UPGRADE
        #: When :meth:`expired` is due (monotonic seconds); 0 when nothing is awaited.
        self.deadline = 0.0
        self._upgraded_at = 0.0
        self._echo_sent = 0.0
        self._echo_pattern: re.Pattern[str] | None = None
        self._keepalive_payload = b""
        self._awaiting = False  # a held connection's ping or echo is unanswered
        self._unmatched: str | None = None
        self._control_count = 0
        self._control_since = 0.0
        self.seq = 0
        #: When and why a held connection was lost (a stable connection's drop).
        self.lost_at: float | None = None
        self.lost_reason: str | None = None

    # -- the attempt's start and end, from the engine ------------------------------------

    def started(self, now: float) -> None:
        """The connect starts now: the handshake deadline bounds connect and upgrade."""
        self.attempt.started = now
        self.deadline = now + self._expect.handshake_timeout

    def ended(self, outcome: Outcome, detail: str, now: float, *, step: str | None = None) -> None:
        """The engine ended the attempt (a failed connect, a cancel): it is over.

        ``step`` names where it ended when the exchange cannot know (the TCP connect).
        """
        self.attempt.decide(outcome, detail, now, step or _STEP_LABELS.get(self.step))
        self._over()

    def connection_lost(self, cause: str, now: float) -> None:
        """The TCP connection is gone; ``cause`` is the transport's error, if any."""
        step = self.step
        if self.attempt.outcome is None:
            name = _STEP_NAMES.get(step, "the exchange")
            detail = f"the peer closed the connection during {name}{cause}"
            self.attempt.decide(Outcome.CLOSED, detail, now, _STEP_LABELS.get(step))
        elif step == Step.HELD:
            self._lose(f"connection lost{cause}", now)
        self._over()

    @property
    def awaiting_answer(self) -> bool:
        """Whether a held connection's last keepalive ping (or echo) is unanswered."""
        return self._awaiting

    def close(self, now: float) -> None:
        """Close a held connection with a closing handshake (RFC 6455 §7.1.2)."""
        if self.step == Step.HELD:
            self._start_close(1000)

    # -- what the session reports ----------------------------------------------------

    def upgraded(self, now: float) -> None:
        """The upgrade succeeded: its answer's bytes arrived at ``now``."""
        started = self.attempt.started
        assert started is not None
        self.attempt.handshake = now - started
        self._upgraded_at = now
        if self._expect.welcome is not None:
            self.step = Step.WELCOME
            self.deadline = now + self._expect.welcome_timeout
        else:
            self._start_echo_or_succeed(now)

    def rejected(self, response: UpgradeResponse, now: float) -> None:
        """The upgrade was answered with a status other than 101."""
        self.attempt.status = response.status
        reason = f" {response.reason}" if response.reason else ""
        self._fail(Outcome.HTTP_STATUS, f"upgrade answered {response.status}{reason}", now)

    def failed(self, detail: str, now: float, *, by_prober: bool = False) -> None:
        """The session failed the connection (a violation, or the prober's receive budget)."""
        if self.attempt.outcome is None:
            # Out of receive budget is the prober's limit, never the target's doing.
            self._fail(Outcome.ERROR if by_prober else Outcome.PROTOCOL_ERROR, detail, now)
        else:
            self._lose(f"protocol error: {detail}", now)
            self._over()

    def peer_closed(self, close: Close, now: float) -> None:
        """The peer's close frame arrived (the session has answered it)."""
        step = self.step
        if step != Step.CLOSING:
            code = "no code" if close.code is None else f"code {close.code}"
            reason = f" ({close.reason})" if close.reason else ""
            if self.attempt.outcome is None:
                name = _STEP_NAMES.get(step, "the exchange")
                self._fail(
                    Outcome.CLOSED, f"the peer closed with {code}{reason} during {name}", now
                )
                return
            self._lose(f"the peer closed with {code}{reason}", now)
        self._over()

    def message(self, data: str | bytes, now: float) -> None:
        """A data message arrived at ``now``."""
        step = self.step
        if step == Step.WELCOME:
            pattern = self._expect.welcome
            assert pattern is not None
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if pattern.search(text) is None:
                self._fail(
                    Outcome.UNEXPECTED_MESSAGE,
                    f"welcome did not match {pattern.pattern!r}: {text[:EXAMPLE_CHARS]!r}",
                    now,
                )
                return
            self.attempt.first_message = now - self._upgraded_at
            self._start_echo_or_succeed(now)
        elif step in _AWAITING_ECHO and self._echo_pattern is not None:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            if self._echo_pattern.search(text) is None:
                # Other traffic (a broadcast, say) may precede the echo; judge at the timeout.
                self._unmatched = text[:EXAMPLE_CHARS]
                return
            rtt = now - self._echo_sent
            self._echo_pattern = None
            self._unmatched = None
            if step == Step.ECHO:
                self.attempt.rtt = rtt
                self._succeed(now)
            else:
                self._keepalive_answered(rtt, now)

    def pong(self, payload: bytes, now: float) -> None:
        """A pong arrived: the answer to a keepalive ping when its payload matches."""
        if (
            self.step == Step.HELD
            and self._keepalive_payload
            and payload == self._keepalive_payload
        ):
            self._keepalive_payload = b""
            self._keepalive_answered(now - self._echo_sent, now)

    def control_frame(self, now: float) -> None:
        """Count a ping or pong; past the budget the connection is failed as a flood."""
        if now - self._control_since >= 1.0:
            self._control_since = now
            self._control_count = 0
        self._control_count += 1
        if self._control_count > MAX_CONTROL_FRAMES_PER_SECOND and self.step < Step.OVER:
            detail = f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
            self.session.send_close(1008)  # policy violation (RFC 6455 §7.4.1)
            if self.attempt.outcome is None:
                self._fail(Outcome.PROTOCOL_ERROR, detail, now)
            else:
                self._lose(f"protocol error: {detail}", now)
                self._over()

    def expired(self, now: float) -> None:
        """The deadline passed: a step timed out, or a held connection's keepalive is due."""
        self.deadline = 0.0
        step = self.step
        expect = self._expect
        if step == Step.UPGRADE:
            self._fail(
                Outcome.TIMEOUT, f"no upgrade answer within {expect.handshake_timeout:g}s", now
            )
        elif step == Step.WELCOME:
            self._fail(Outcome.TIMEOUT, f"no welcome within {expect.welcome_timeout:g}s", now)
        elif step == Step.ECHO:
            if self._unmatched is not None:
                self._fail(
                    Outcome.UNEXPECTED_MESSAGE,
                    f"no message matched the echo pattern within {expect.echo_timeout:g}s; "
                    f"last one: {self._unmatched!r}",
                    now,
                )
            else:
                self._fail(Outcome.TIMEOUT, f"no echo answer within {expect.echo_timeout:g}s", now)
        elif step == Step.HELD:
            if self._awaiting:
                self._keepalive_lost(now)
            else:
                self._send_keepalive(now)

    # -- steps --------------------------------------------------------------------------

    def _start_echo_or_succeed(self, now: float) -> None:
        if self._expect.echo_payload is None:
            self._succeed(now)
            return
        self.step = Step.ECHO
        self._send_echo(now)
        self.deadline = now + self._expect.echo_timeout

    def _send_echo(self, now: float) -> None:
        self.seq += 1
        text, self._echo_pattern = self._expect.echo_for(self.attempt.conn, self.seq)
        self._echo_sent = now
        self.session.send_text(text.encode())

    def _succeed(self, now: float) -> None:
        attempt = self.attempt
        started = attempt.started
        assert started is not None
        attempt.latency = now - started
        attempt.decide(Outcome.OK, "", now)
        if self.keep_open:
            self.step = Step.HELD
            keepalive = self._keepalive
            self.deadline = now + keepalive.interval if keepalive is not None else 0.0
        else:
            self._start_close(1000)

    def _fail(self, outcome: Outcome, detail: str, now: float) -> None:
        self.attempt.decide(outcome, detail, now, _STEP_LABELS.get(self.step))
        if self.step in _EXPECTING and outcome != Outcome.CLOSED:
            self.session.send_close(1008 if outcome == Outcome.UNEXPECTED_MESSAGE else 1001)
        self._over()

    # -- held connections ---------------------------------------------------------------

    def _send_keepalive(self, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        if keepalive.mode == "echo":
            self._send_echo(now)
        else:
            self.seq += 1
            self._keepalive_payload = self.seq.to_bytes(8, "big")
            self._echo_sent = now
            self.session.send_ping(self._keepalive_payload)
        self._awaiting = True
        self.deadline = now + keepalive.timeout

    def _keepalive_answered(self, rtt: float, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        keepalive.on_rtt(rtt)
        self._awaiting = False
        # Keep the cadence from when the ping was sent, not from when it was answered.
        self.deadline = max(now, self._echo_sent + keepalive.interval)

    def _keepalive_lost(self, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        what = "echo" if keepalive.mode == "echo" else "pong"
        self._lose(f"no {what} within {keepalive.timeout:g}s", now)
        self._start_close(1001)

    # -- endings ------------------------------------------------------------------------

    def _lose(self, reason: str, now: float) -> None:
        if self.lost_at is None:
            self.lost_at = now
            self.lost_reason = reason

    def _start_close(self, code: int) -> None:
        self.step = Step.CLOSING
        self.deadline = 0.0
        self.session.send_close(code)

    def _over(self) -> None:
        self.step = Step.OVER
        self.deadline = 0.0
