"""What a probe connection is for, sans I/O: its conversation, heartbeats and keepalive.

The session (``session.py``) keeps the WebSocket protocol; this keeps the probe's steps
on top of it and is the one writer of the attempt's outcome and measurements. The engine
hands it each session event with the instant its bytes arrived, and calls :meth:`expired`
when :attr:`ProbeExchange.deadline` passes; what the exchange sends goes through the
session. Nothing here reads a clock or touches a socket. The steps themselves (what to
send, what to expect) are the target's conversation, compiled once
(``conversation.py``); the short form's welcome and echo are a conversation too.

Steps, in the order a healthy connection passes through them::

    UPGRADE -> the conversation's steps -> CLOSING (our close frame out) -> OVER
                                        \\-> HELD (keep_open; keepalive, heartbeats) --^

A message that an awaiting step does not match is offered to the heartbeat rules (when
the target has any: one branch otherwise), and one they match is answered, not judged.

``OVER`` means the engine closes the TCP connection now (a failure, a close frame from
the peer); ``CLOSING`` means it waits for the peer's close, within ``close_timeout``.
A failed attempt's step label is ``upgrade`` or the conversation step's name.

Past 500 lines on purpose: one class, the one writer of an attempt's outcome; its steps,
held connections and endings share its state and are read together.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome
from spikewatch.protocol.conversation import (
    EXAMPLE_CHARS,
    Conversation,
    Send,
    Stage,
    TemplateError,
    echo_for_messages,
    example_of,
    welcome_echo_conversation,
)
from spikewatch.protocol.frames import MAX_CONTROL_FRAMES_PER_SECOND, Close
from spikewatch.protocol.handshake import UpgradeResponse
from spikewatch.protocol.session import ClientSession

__all__ = [
    "EXAMPLE_CHARS",
    "MAX_CONTROL_FRAMES_PER_SECOND",
    "Expectations",
    "Keepalive",
    "ProbeExchange",
    "Step",
    "WelcomeEcho",
    "conversation_of",
]


#: What the probe awaits: ``UPGRADE``, then the conversation's steps (``CONVERSATION``, or
#: ``WELCOME`` and ``ECHO`` for the short form), then ``HELD``, ``CLOSING``, ``OVER``.
Step = Stage

#: The stages in which a conversation step awaits a message lie strictly between these
#: two; plain ints, compared on the hot path (an enum in a set would hash by name).
_UPGRADE = int(Step.UPGRADE)
_HELD = int(Step.HELD)


class Expectations(Protocol):
    """What a probe expects of its target (``engine.spec.ConnectionSpec`` provides it)."""

    @property
    def handshake_timeout(self) -> float: ...
    @property
    def conversation(self) -> Conversation | None: ...


class WelcomeEcho(Protocol):
    """The short form's expectations, written by hand: a welcome, then one echo."""

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


def conversation_of(expect: Expectations | WelcomeEcho) -> Conversation:
    """Return the conversation ``expect`` holds, or the one its welcome and echo make."""
    conversation: Conversation | None = getattr(expect, "conversation", None)
    if conversation is not None:
        return conversation
    short = cast("WelcomeEcho", expect)
    echo = None if short.echo_payload is None else echo_for_messages(short.echo_for)
    return welcome_echo_conversation(short.welcome, short.welcome_timeout, echo, short.echo_timeout)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """How a held (stable) connection proves it is still alive.

    ``echo``: the target's keepalive message (its ``keepalive``, else its echo).
    """

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
        "_conversation",
        "_expect",
        "_index",
        "_keepalive",
        "_keepalive_payload",
        "_keepalive_seq",
        "_last_send",
        "_left",
        "_ping_sent",
        "_step_seq",
        "_unmatched",
        "_upgraded_at",
        "attempt",
        "captures",
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
        expect: Expectations | WelcomeEcho,
        *,
        keep_open: bool = False,
        keepalive: Keepalive | None = None,
    ) -> None:
        self.attempt = attempt
        self.session = session
        self._expect = expect
        self._conversation = conversation_of(expect)
        self.keep_open = keep_open or keepalive is not None
        self._keepalive = keepalive
        self.step = Step.UPGRADE
        #: When :meth:`expired` is due (monotonic seconds); 0 when nothing is awaited.
        self.deadline = 0.0
        self._upgraded_at = 0.0
        self._index = 0  # the conversation step in progress
        self._left = 0  # how many more times that step runs (its repeat)
        self._last_send = 0.0  # when the last conversation send was written
        self._step_seq = 0  # the {seq} of that send, which the expect steps match with
        self._ping_sent = 0.0  # when a held connection's keepalive went out
        self._keepalive_payload = b""
        self._keepalive_seq = 0  # the {seq} of the keepalive message awaiting its answer
        self._awaiting = False  # a held connection's ping or keepalive is unanswered
        self._unmatched: str | None = None
        self._control_count = 0
        self._control_since = 0.0
        #: How many messages this connection has sent (``{seq}``).
        self.seq = 0
        #: What the conversation captured, by name (read after it, e.g. ``version``).
        self.captures: dict[str, str] = {}
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
        self.attempt.decide(outcome, detail, now, step or self._label())
        self._over()

    def connection_lost(self, cause: str, now: float) -> None:
        """The TCP connection is gone; ``cause`` is the transport's error, if any."""
        step = self.step
        if self.attempt.outcome is None:
            detail = f"the peer closed the connection during {self._during()}{cause}"
            self.attempt.decide(Outcome.CLOSED, detail, now, self._label())
        elif step == Step.HELD:
            self._lose(f"connection lost{cause}", now)
        self._over()

    @property
    def awaiting_answer(self) -> bool:
        """Whether a held connection's last keepalive ping (or message) is unanswered."""
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
        self._run_from(0, now)

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
            # A held connection lost to the budget keeps the budget's detail as its reason
            # (core.classify.lost_to_prober tells it from the target's drops).
            self._lose(detail if by_prober else f"protocol error: {detail}", now)
            self._over()

    def peer_closed(self, close: Close, now: float) -> None:
        """The peer's close frame arrived (the session has answered it)."""
        step = self.step
        if step != Step.CLOSING:
            code = "no code" if close.code is None else f"code {close.code}"
            reason = f" ({close.reason})" if close.reason else ""
            if self.attempt.outcome is None:
                self._fail(
                    Outcome.CLOSED,
                    f"the peer closed with {code}{reason} during {self._during()}",
                    now,
                )
                return
            self._lose(f"the peer closed with {code}{reason}", now)
        self._over()

    def message(self, data: str | bytes, now: float) -> None:
        """A data message arrived at ``now``."""
        step = self.step
        if _UPGRADE < step < _HELD:
            self._expecting(data, now)
        elif step == _HELD:
            self._held_message(data, now)

    def pong(self, payload: bytes, now: float) -> None:
        """A pong arrived: the answer to a keepalive ping when its payload matches."""
        if (
            self.step == Step.HELD
            and self._keepalive_payload
            and payload == self._keepalive_payload
        ):
            self._keepalive_payload = b""
            self._keepalive_answered(now - self._ping_sent, now)

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
        if step == Step.UPGRADE:
            timeout = self._expect.handshake_timeout
            self._fail(Outcome.TIMEOUT, f"no upgrade answer within {timeout:g}s", now)
        elif _UPGRADE < step < _HELD:
            current = self._conversation.steps[self._index]
            if current.optional:
                self._run_from(self._index + 1, now)
            elif self._unmatched is not None:
                self._fail(
                    Outcome.UNEXPECTED_MESSAGE,
                    f"no message matched {current.pattern_of} within {current.timeout:g}s; "
                    f"last one: {self._unmatched}",
                    now,
                )
            else:
                self._fail(
                    Outcome.TIMEOUT, f"no {current.awaited} within {current.timeout:g}s", now
                )
        elif step == Step.HELD:
            if self._awaiting:
                self._keepalive_lost(now)
            else:
                self._send_keepalive(now)

    # -- the conversation ---------------------------------------------------------------

    def _run_from(self, index: int, now: float) -> None:
        """Send what the steps from ``index`` send; stop at the next expect, or succeed."""
        steps = self._conversation.steps
        count = len(steps)
        while index < count:
            current = steps[index]
            send = current.send
            if send is None:
                self._index = index
                self._left = current.repeat
                self._unmatched = None
                self.step = current.stage
                self.deadline = now + current.timeout
                return
            try:
                for _ in range(current.repeat):
                    self._send(send)
            except TemplateError as exc:
                self._index = index  # the failure is this send step's
                self.step = current.stage
                self._unsendable(f"step {current.name!r}", exc, now)
                return
            self._last_send = now
            self._step_seq = self.seq
            index += 1
        self._succeed(now)

    def _send(self, send: Send) -> None:
        self.seq += 1
        data = send.render(self.attempt.conn, self.seq, self.captures)
        if send.binary:
            self.session.send_binary(data)
        else:
            self.session.send_text(data)

    def _expecting(self, data: str | bytes, now: float) -> None:
        conversation = self._conversation
        index = self._index
        current = conversation.steps[index]
        matcher = current.expect
        assert matcher is not None
        # Matched with the {seq} of the last conversation send: heartbeat answers sent
        # meanwhile do not move it on (as for the keepalive's answer).
        if matcher.match(data, self.attempt.conn, self._step_seq, self.captures):
            attempt = self.attempt
            if index == conversation.first_message and attempt.first_message is None:
                attempt.first_message = now - self._upgraded_at
            if index == conversation.round_trip and attempt.rtt is None:
                attempt.rtt = now - self._last_send
            self._left -= 1
            if self._left:
                self._unmatched = None
                self.deadline = now + current.timeout
            else:
                self._run_from(index + 1, now)
            return
        if conversation.heartbeats and self._heartbeat(data, now):
            # A server's ping while the step waits (a slow subscription): answered, and
            # neither a failure under others: fail nor the timeout's "last one".
            return
        example = self._example(data)
        if not current.others_fail:
            # Other traffic (a broadcast, say) may precede the answer; judge at the timeout.
            self._unmatched = example
        elif current.optional:
            # Not this step's message: the conversation goes on, and the next step has it.
            self._run_from(index + 1, now)
            self.message(data, now)
        else:
            self._fail(
                Outcome.UNEXPECTED_MESSAGE,
                f"{current.name} did not match {matcher.describe()}: {example}",
                now,
            )

    def _example(self, data: str | bytes) -> str:
        if isinstance(data, bytes) and self.step != Step.CONVERSATION:
            # The short form's welcome and echo matched (and quoted) a binary message's text.
            data = data.decode("utf-8", "replace")
        return example_of(data)

    def _label(self) -> str | None:
        step = self.step
        if step == Step.UPGRADE:
            return "upgrade"
        if _UPGRADE < step < _HELD:
            return self._conversation.steps[self._index].name
        return None

    def _during(self) -> str:
        # Undecided attempts only: in the upgrade or in a conversation step.
        if self.step == Step.UPGRADE:
            return "the upgrade"
        return self._conversation.steps[self._index].during

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
        self.attempt.decide(outcome, detail, now, self._label())
        if _UPGRADE < self.step < _HELD and outcome != Outcome.CLOSED:
            self.session.send_close(1008 if outcome == Outcome.UNEXPECTED_MESSAGE else 1001)
        self._over()

    # -- held connections ---------------------------------------------------------------

    def _held_message(self, data: str | bytes, now: float) -> None:
        conversation = self._conversation
        conn, captures = self.attempt.conn, self.captures
        message = conversation.keepalive
        if (
            self._awaiting
            and message is not None
            and not self._keepalive_payload
            and message.expect.match(data, conn, self._keepalive_seq, captures)
        ):
            self._keepalive_answered(now - self._ping_sent, now)
            return
        if conversation.heartbeats and self.session.answer_pings:
            # (answer_pings off: the peer reads nothing; see _heartbeat.)
            self._heartbeat(data, now)

    def _heartbeat(self, data: str | bytes, now: float) -> bool:
        """Answer ``data`` when a heartbeat rule matches it (the first that does).

        Return whether one matched: a heartbeat, answered or not, is not another message.
        """
        conn, captures = self.attempt.conn, self.captures
        for rule in self._conversation.heartbeats:
            if rule.when.match(data, conn, self.seq, captures):
                if self.session.answer_pings:
                    try:
                        self._send(rule.answer)
                    except TemplateError as exc:
                        self._unsendable("a heartbeat answer", exc, now)
                # Else the peer reads nothing (our write buffer is past its mark): answer
                # it no more than its pings, or a heartbeat flood grows our memory without
                # bound (issue 12).
                return True
        return False

    def _send_keepalive(self, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        message = self._conversation.keepalive
        self._ping_sent = now
        if keepalive.mode == "echo" and message is not None:
            try:
                self._send(message.send)
            except TemplateError as exc:
                self._unsendable("the keepalive", exc, now)
                return
            # Its answer is matched with its own {seq}: heartbeat answers may follow it.
            self._keepalive_seq = self.seq
        else:
            self.seq += 1
            self._keepalive_payload = self.seq.to_bytes(8, "big")
            self.session.send_ping(self._keepalive_payload)
        self._awaiting = True
        self.deadline = now + keepalive.timeout

    def _keepalive_answered(self, rtt: float, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        keepalive.on_rtt(rtt)
        self._awaiting = False
        # Keep the cadence from when the ping was sent, not from when it was answered.
        self.deadline = max(now, self._ping_sent + keepalive.interval)

    def _keepalive_lost(self, now: float) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        what = "pong" if self._keepalive_payload else "echo"
        self._lose(f"no {what} within {keepalive.timeout:g}s", now)
        self._start_close(1001)

    # -- endings ------------------------------------------------------------------------

    def _unsendable(self, what: str, exc: TemplateError, now: float) -> None:
        """A send's template cannot be filled (a capture that is not hex bytes): the
        attempt fails as ``unexpected_message`` (what the target sent does not fit), or a
        held connection is lost; either way it is closed with 1008."""
        detail = f"{what} cannot be sent: {exc}"
        if self.attempt.outcome is None:
            self._fail(Outcome.UNEXPECTED_MESSAGE, detail, now)
        else:
            self._lose(detail, now)
            self._start_close(1008)

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
