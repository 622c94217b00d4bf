"""The probe's steps over a session, with instants passed in: no socket, no clock, no sleep."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.protocol.exchange import (
    MAX_CONTROL_FRAMES_PER_SECOND,
    Keepalive,
    ProbeExchange,
    Step,
)
from spikewatch.protocol.frames import Close, Opcode
from spikewatch.protocol.handshake import UpgradeResponse, accept_for
from spikewatch.protocol.session import ClientSession, Upgraded
from tests.protocol.test_session import client_frames

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
HEAD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept_for(KEY)}\r\n\r\n"
).encode()


@dataclass(frozen=True)
class Expect:
    """What the probe expects: the fields of a ConnectionSpec the exchange reads."""

    handshake_timeout: float = 5.0
    welcome: re.Pattern[str] | None = None
    welcome_timeout: float = 2.0
    echo_payload: str | None = None
    echo_timeout: float = 1.0

    def echo_for(self, conn: int, seq: int) -> tuple[str, re.Pattern[str]]:
        assert self.echo_payload is not None
        return self.echo_payload.replace("{seq}", str(seq)), re.compile(f'"seq":{seq}')


def exchange(
    expect: Expect, *, keep_open: bool = False, keepalive: Keepalive | None = None
) -> ProbeExchange:
    """An exchange over an opened session, started at t=10 and upgraded at t=10.5."""
    session = ClientSession(b"GET / HTTP/1.1\r\n\r\n", KEY, (), 1000)
    session.data_to_send()
    session.receive_data(HEAD)
    assert isinstance(session.events_received()[0], Upgraded)
    ex = ProbeExchange(
        Attempt(Phase.BASELINE, 3), session, expect, keep_open=keep_open, keepalive=keepalive
    )
    ex.started(10.0)
    assert ex.deadline == 15.0
    ex.upgraded(10.5)
    return ex


def sent(ex: ProbeExchange) -> list[tuple[int, bytes]]:
    return client_frames(ex.session.data_to_send())


ECHO = Expect(welcome=re.compile("welcome"), echo_payload='{"seq":{seq}}')


def test_upgrade_alone_is_ok_and_starts_the_close() -> None:
    """Without welcome or echo the upgrade is the whole probe: ok, then a close frame."""
    ex = exchange(Expect())
    a = ex.attempt
    assert (a.outcome, a.handshake, a.latency, a.ended) == (Outcome.OK, 0.5, 0.5, 10.5)
    assert ex.step is Step.CLOSING
    assert sent(ex) == [(Opcode.CLOSE, (1000).to_bytes(2, "big"))]


def test_welcome_then_echo_measures_each_step() -> None:
    """first_message, rtt and latency come from the instants passed in."""
    ex = exchange(ECHO)
    assert (ex.step, ex.deadline) == (Step.WELCOME, 12.5)
    ex.message("welcome!", 10.75)
    assert ex.step is Step.ECHO
    assert ex.deadline == 11.75
    assert sent(ex) == [(Opcode.TEXT, b'{"seq":1}')]
    ex.message("a broadcast first", 10.8)
    ex.message('{"seq":1}', 11.0)
    a = ex.attempt
    assert (a.first_message, a.rtt, a.latency, a.outcome) == (0.25, 0.25, 1.0, Outcome.OK)


def test_wrong_welcome_is_unexpected_and_closes_with_1008() -> None:
    """A welcome that does not match ends the attempt at once, quoting it."""
    ex = exchange(ECHO)
    ex.message('{"type":"error"}', 11.0)
    assert ex.attempt.outcome is Outcome.UNEXPECTED_MESSAGE
    assert '{"type":"error"}' in ex.attempt.detail
    assert ex.step is Step.OVER
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_deadlines_name_the_step_that_timed_out() -> None:
    """Expiry in the welcome is a timeout naming it; in the echo, the last message seen."""
    ex = exchange(ECHO)
    ex.expired(12.5)
    assert (ex.attempt.outcome, ex.attempt.detail) == (Outcome.TIMEOUT, "no welcome within 2s")
    assert sent(ex) == [(Opcode.CLOSE, (1001).to_bytes(2, "big"))]
    ex = exchange(ECHO)
    ex.message("welcome", 11.0)
    ex.message("not it", 11.1)
    ex.expired(12.0)
    assert ex.attempt.outcome is Outcome.UNEXPECTED_MESSAGE
    assert ex.attempt.detail.endswith("last one: 'not it'")


def test_upgrade_deadline_is_a_timeout_naming_the_upgrade() -> None:
    """Expiry before the upgrade answer is 'no upgrade answer within'."""
    session = ClientSession(b"GET / HTTP/1.1\r\n\r\n", KEY, (), 1000)
    ex = ProbeExchange(Attempt(Phase.SPIKE, 1), session, Expect())
    ex.started(0.0)
    ex.expired(5.0)
    assert (ex.attempt.outcome, ex.attempt.detail) == (
        Outcome.TIMEOUT,
        "no upgrade answer within 5s",
    )
    assert ex.step is Step.OVER


def test_keepalive_pings_on_cadence_measures_rtt_and_detects_a_drop() -> None:
    """A held connection pings every interval from the last ping; a missing pong is a drop."""
    rtts: list[float] = []
    keepalive = Keepalive(interval=1.0, timeout=0.5, mode="ping", on_rtt=rtts.append)
    ex = exchange(Expect(), keepalive=keepalive)
    assert (ex.step, ex.deadline) == (Step.HELD, 11.5)
    ex.expired(11.5)
    assert sent(ex) == [(Opcode.PING, (1).to_bytes(8, "big"))]
    assert ex.deadline == 12.0
    ex.pong(b"other", 11.6)
    ex.pong((1).to_bytes(8, "big"), 11.7)
    assert rtts == [11.7 - 11.5]
    assert ex.deadline == 12.5, "the cadence runs from the ping, not the pong"
    ex.expired(12.5)
    ex.expired(13.0)  # no pong within 0.5 s
    assert ex.lost_at == 13.0
    assert ex.lost_reason == "no pong within 0.5s"
    assert ex.step is Step.CLOSING
    assert sent(ex)[-1] == (Opcode.CLOSE, (1001).to_bytes(2, "big"))


def test_held_connection_closed_by_the_peer_is_lost() -> None:
    """A close frame on a held connection is a loss with its code; the attempt stays ok."""
    ex = exchange(Expect(), keep_open=True)
    ex.peer_closed(Close(1001, "going away"), 20.0)
    assert ex.attempt.outcome is Outcome.OK
    assert (ex.lost_at, ex.lost_reason) == (20.0, "the peer closed with code 1001 (going away)")
    assert ex.step is Step.OVER


def test_close_during_a_step_is_closed_naming_the_step() -> None:
    """A close frame before the welcome is outcome 'closed' naming the welcome."""
    ex = exchange(ECHO)
    ex.peer_closed(Close(None, ""), 11.0)
    assert ex.attempt.outcome is Outcome.CLOSED
    assert ex.attempt.detail == "the peer closed with no code during the welcome"


def test_connection_lost_is_closed_during_a_step_and_a_loss_when_held() -> None:
    """TCP gone mid-step decides 'closed'; gone while held marks the loss."""
    ex = exchange(ECHO)
    ex.connection_lost(": reset", 11.0)
    assert ex.attempt.detail == "the peer closed the connection during the welcome: reset"
    held = exchange(Expect(), keep_open=True)
    held.connection_lost("", 30.0)
    assert (held.attempt.outcome, held.lost_reason) == (Outcome.OK, "connection lost")


def test_a_control_frame_flood_fails_the_attempt() -> None:
    """More control frames within a second than the budget is a protocol_error (1008)."""
    ex = exchange(ECHO)
    for i in range(MAX_CONTROL_FRAMES_PER_SECOND):
        ex.control_frame(11.0 + i * 1e-4)
    assert ex.attempt.outcome is None
    ex.control_frame(11.5)
    assert ex.attempt.outcome is Outcome.PROTOCOL_ERROR
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_control_frames_spread_over_seconds_are_within_budget() -> None:
    """The budget is per second: the same count spread out is fine."""
    ex = exchange(ECHO)
    for i in range(3 * MAX_CONTROL_FRAMES_PER_SECOND):
        ex.control_frame(11.0 + i * 2e-3)
    assert ex.attempt.outcome is None


def test_rejection_and_failures_decide_their_outcomes() -> None:
    """A non-101 status, a violation and the prober's budget each give their outcome."""
    ex = exchange(ECHO)
    ex.rejected(UpgradeResponse(503, "Busy", ()), 11.0)
    assert (ex.attempt.outcome, ex.attempt.status, ex.attempt.detail) == (
        Outcome.HTTP_STATUS,
        503,
        "upgrade answered 503 Busy",
    )
    ex = exchange(ECHO)
    ex.failed("bad frame", 11.0)
    assert ex.attempt.outcome is Outcome.PROTOCOL_ERROR
    ex = exchange(ECHO)
    ex.failed("buffers full", 11.0, by_prober=True)
    assert ex.attempt.outcome is Outcome.ERROR


def test_the_first_decision_stands() -> None:
    """An attempt already decided keeps its outcome when the engine ends it later."""
    ex = exchange(Expect())
    ex.ended(Outcome.ERROR, "cancelled", 99.0)
    assert ex.attempt.outcome is Outcome.OK
    assert ex.step is Step.OVER
