"""The receive budget shared by every connection's partial messages, bytes in, no socket."""

from __future__ import annotations

import pytest

from spikewatch.protocol.frames import FrameParser, Message, Opcode, Ping
from spikewatch.protocol.handshake import accept_for
from spikewatch.protocol.receive_budget import ReceiveBudget, ReceiveBudgetError
from spikewatch.protocol.session import ClientSession, Failed, State, Upgraded


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    return bytes((first, 126)) + n.to_bytes(2, "big") + payload


def test_a_partial_frame_holds_its_bytes_until_it_completes() -> None:
    """Bytes of an unfinished frame are held in the budget and given back once it completes."""
    budget = ReceiveBudget(10_000)
    parser = FrameParser(5_000, budget)
    frame = server_frame(Opcode.BINARY, b"x" * 1000)
    assert parser.feed(frame[:600]) == []
    assert budget.held == 600
    assert parser.feed(frame[600:]) == [Message(b"x" * 1000)]
    assert budget.held == 0
    assert budget.peak == 600


def test_fragments_of_an_unfinished_message_are_held() -> None:
    """Complete fragments of a message not yet finished count against the budget."""
    budget = ReceiveBudget(10_000)
    parser = FrameParser(5_000, budget)
    parser.feed(server_frame(Opcode.TEXT, b"a" * 300, fin=False))
    assert budget.held == 300
    assert parser.feed(server_frame(Opcode.CONTINUATION, b"b")) == [Message("a" * 300 + "b")]
    assert budget.held == 0


def test_past_the_budget_a_connection_is_refused_and_holds_nothing_more() -> None:
    """The connection that would take the shared budget past its limit is refused."""
    budget = ReceiveBudget(1_000)
    first, second = FrameParser(5_000, budget), FrameParser(5_000, budget)
    first.feed(server_frame(Opcode.BINARY, b"x" * 900)[:800])
    with pytest.raises(ReceiveBudgetError, match="max_receive_buffer_bytes=1000"):
        second.feed(server_frame(Opcode.PING, b"p") + server_frame(Opcode.BINARY, b"y" * 900)[:300])
    assert second.partial == [Ping(b"p")], "what came before the refusal is still reported"
    assert budget.held == 800
    assert budget.refused == 1
    first.release()
    assert budget.held == 0


def test_session_fails_by_the_prober_and_gives_everything_back() -> None:
    """Out of budget, the session fails (by_prober, close 1009) and holds nothing after."""
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    head = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
    ).encode()
    budget = ReceiveBudget(500)
    holder = ClientSession(b"GET / HTTP/1.1\r\n\r\n", key, (), 5_000, budget)
    refused = ClientSession(b"GET / HTTP/1.1\r\n\r\n", key, (), 5_000, budget)
    for session in (holder, refused):
        session.receive_data(head)
        assert isinstance(session.events_received()[0], Upgraded)
    holder.receive_data(server_frame(Opcode.TEXT, b"a" * 1000)[:400])
    refused.receive_data(server_frame(Opcode.TEXT, b"b" * 1000)[:400])
    (event,) = refused.events_received()
    assert isinstance(event, Failed)
    assert event.by_prober
    assert event.code == 1009
    assert refused.state is State.CLOSED
    assert budget.held == 400
    holder.receive_eof()
    assert budget.held == 0
