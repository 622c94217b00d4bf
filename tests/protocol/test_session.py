"""The client connection's protocol state, bytes in and bytes out, with no socket."""

from __future__ import annotations

import pytest

from spikewatch.protocol.frames import (
    MAX_CONTROL_FRAMES_PER_SECOND,
    Close,
    Message,
    Opcode,
    Ping,
    Pong,
)
from spikewatch.protocol.handshake import accept_for
from spikewatch.protocol.session import ClientSession, Failed, Rejected, State, Upgraded

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
REQUEST = b"GET /ws HTTP/1.1\r\nHost: t\r\n\r\n"
GOOD_HEAD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Accept: {accept_for(KEY)}\r\n\r\n"
).encode()


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """An unmasked server frame (payloads under 126 bytes)."""
    assert len(payload) < 126
    return bytes(((0x80 if fin else 0) | opcode, len(payload))) + payload


def client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmask the client's frames in ``data``: (opcode, payload) each."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x80, "every client frame is final"
        assert b1 & 0x80, "every client frame is masked (RFC 6455 §5.3)"
        n = b1 & 0x7F
        head = 2
        if n == 126:
            n, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        mask = data[pos + head : pos + head + 4]
        body = data[pos + head + 4 : pos + head + 4 + n]
        frames.append((b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))))
        pos += head + 4 + n
    return frames


def opened(*, offered: tuple[str, ...] = ()) -> ClientSession:
    session = ClientSession(REQUEST, KEY, offered, max_message_bytes=1000)
    assert session.data_to_send() == REQUEST
    session.receive_data(GOOD_HEAD)
    assert isinstance(session.events_received()[0], Upgraded)
    return session


def test_the_request_is_the_first_thing_to_send() -> None:
    """A new session is CONNECTING and has exactly the upgrade request to send."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    assert session.state is State.CONNECTING
    assert session.data_to_send() == REQUEST
    assert session.data_to_send() == b""
    assert session.events_received() == []


def test_upgrade_then_frames_in_the_same_bytes_are_events_in_order() -> None:
    """A 101 answer followed by a message in one read gives Upgraded, then the Message."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.data_to_send()
    session.receive_data(GOOD_HEAD + server_frame(Opcode.TEXT, b"welcome"))
    events = session.events_received()
    assert [type(e) for e in events] == [Upgraded, Message]
    assert events[1] == Message("welcome")
    assert session.state is State.OPEN


def test_upgrade_answer_a_byte_at_a_time() -> None:
    """An answer head dribbled one byte per read completes the upgrade once."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    data = GOOD_HEAD + server_frame(Opcode.TEXT, b"hi")
    events = []
    for i in range(len(data)):
        session.receive_data(data[i : i + 1])
        events += session.events_received()
    assert [type(e) for e in events] == [Upgraded, Message]


def test_selected_subprotocol_is_reported() -> None:
    """The subprotocol the server selected among those offered comes with Upgraded."""
    session = ClientSession(REQUEST, KEY, ("chat.v1", "chat.v2"), 1000)
    head = GOOD_HEAD.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat.v2\r\n\r\n")
    session.receive_data(head)
    (event,) = session.events_received()
    assert isinstance(event, Upgraded)
    assert event.subprotocol == "chat.v2"


def test_other_status_is_rejected_and_nothing_is_sent() -> None:
    """A 403 answer ends the session CLOSED with a Rejected event; no frame is sent."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.data_to_send()
    session.receive_data(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    (event,) = session.events_received()
    assert isinstance(event, Rejected)
    assert (event.response.status, event.response.reason) == (403, "Forbidden")
    assert session.state is State.CLOSED
    assert session.data_to_send() == b""


def test_bad_accept_fails_without_a_close_frame() -> None:
    """A wrong Sec-WebSocket-Accept fails the connection before it exists: no close frame."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.data_to_send()
    session.receive_data(GOOD_HEAD.replace(accept_for(KEY).encode(), b"x" * 28))
    (event,) = session.events_received()
    assert isinstance(event, Failed)
    assert event.code is None
    assert "Sec-WebSocket-Accept" in event.detail
    assert session.data_to_send() == b""
    assert session.state is State.CLOSED


def test_ping_is_answered_with_its_payload() -> None:
    """A ping queues a pong carrying the same payload (RFC 6455 §5.5.2)."""
    session = opened()
    session.receive_data(server_frame(Opcode.PING, b"abc"))
    assert session.events_received() == [Ping(b"abc")]
    assert client_frames(session.data_to_send()) == [(Opcode.PONG, b"abc")]


def test_of_pings_read_at_once_the_last_is_answered() -> None:
    """Pings read at once get one pong, the most recent's (RFC 6455 §5.5.3); pings read
    apart get one each; a ping before a close in the same read is answered before the
    close's answer."""
    session = opened()
    pings = b"".join(server_frame(Opcode.PING, b"p%d" % i) for i in range(5))
    session.receive_data(pings)
    assert session.events_received() == [Ping(b"p%d" % i) for i in range(5)]
    assert client_frames(session.data_to_send()) == [(Opcode.PONG, b"p4")]
    session.receive_data(server_frame(Opcode.PING, b"a"))
    session.receive_data(server_frame(Opcode.PING, b"b"))
    assert client_frames(session.data_to_send()) == [(Opcode.PONG, b"a"), (Opcode.PONG, b"b")]
    close = server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    session.receive_data(pings + close + server_frame(Opcode.PING, b"after"))
    assert client_frames(session.data_to_send()) == [
        (Opcode.PONG, b"p4"),
        (Opcode.CLOSE, (1000).to_bytes(2, "big")),
    ]


def test_more_control_frames_at_once_than_a_second_allows_fail_with_1008() -> None:
    """A read of more control frames than MAX_CONTROL_FRAMES_PER_SECOND is a flood: the
    parser stops there, the pings before it get their pong, and the close says 1008."""
    session = opened()
    ping = server_frame(Opcode.PING, b"x")
    session.receive_data(ping * MAX_CONTROL_FRAMES_PER_SECOND)
    assert len(session.events_received()) == MAX_CONTROL_FRAMES_PER_SECOND
    assert client_frames(session.data_to_send()) == [(Opcode.PONG, b"x")]
    session.receive_data(
        ping * (MAX_CONTROL_FRAMES_PER_SECOND + 1) + server_frame(Opcode.TEXT, b"t")
    )
    *pings, failed = session.events_received()
    assert pings == [Ping(b"x")] * MAX_CONTROL_FRAMES_PER_SECOND
    assert isinstance(failed, Failed)
    assert failed.detail == f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
    assert client_frames(session.data_to_send()) == [
        (Opcode.PONG, b"x"),
        (Opcode.CLOSE, (1008).to_bytes(2, "big")),
    ]
    assert session.state is State.CLOSED


def test_pings_are_not_answered_when_the_caller_says_so() -> None:
    """With answer_pings off (a peer that reads nothing), a ping queues no pong."""
    session = opened()
    session.answer_pings = False
    session.receive_data(server_frame(Opcode.PING, b"abc"))
    assert session.events_received() == [Ping(b"abc")]
    assert session.data_to_send() == b""


def test_peer_close_is_answered_with_its_own_code() -> None:
    """The peer's Close is echoed with its status code, and the session is CLOSED."""
    session = opened()
    session.receive_data(server_frame(Opcode.CLOSE, (4001).to_bytes(2, "big") + b"bye"))
    assert session.events_received() == [Close(4001, "bye")]
    assert client_frames(session.data_to_send()) == [(Opcode.CLOSE, (4001).to_bytes(2, "big"))]
    assert session.state is State.CLOSED
    assert session.close_received == Close(4001, "bye")
    assert session.close_sent == 4001


def test_peer_close_without_code_is_answered_without_code() -> None:
    """A Close with no payload is answered with a Close with no payload."""
    session = opened()
    session.receive_data(server_frame(Opcode.CLOSE, b""))
    assert session.events_received() == [Close(None, "")]
    assert client_frames(session.data_to_send()) == [(Opcode.CLOSE, b"")]


def test_close_followed_by_junk_in_one_read_is_a_clean_close() -> None:
    """Bytes after the peer's Close, in the same read or later, are discarded, not errors."""
    session = opened()
    close = server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    session.receive_data(close + b"\xff\xff junk that is no frame")
    assert session.events_received() == [Close(1000, "")]
    assert session.state is State.CLOSED
    session.receive_data(b"\x00more junk")
    assert session.events_received() == []
    assert client_frames(session.data_to_send()) == [(Opcode.CLOSE, (1000).to_bytes(2, "big"))]


def test_our_close_then_theirs_completes_the_handshake_without_a_second_frame() -> None:
    """After send_close, messages still arrive; the peer's Close is not answered again."""
    session = opened()
    session.send_close(1000)
    assert session.state is State.CLOSING
    assert client_frames(session.data_to_send()) == [(Opcode.CLOSE, (1000).to_bytes(2, "big"))]
    session.receive_data(
        server_frame(Opcode.TEXT, b"late")
        + server_frame(Opcode.PING, b"p")
        + server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    )
    assert session.events_received() == [Message("late"), Ping(b"p"), Close(1000, "")]
    # No pong after our close frame (§5.5.1), and no second close frame.
    assert session.data_to_send() == b""
    assert session.state is State.CLOSED


def test_nothing_is_sent_once_closing() -> None:
    """Messages, pings and a second close are not sent after our close frame."""
    session = opened()
    session.send_close(1001)
    session.data_to_send()
    session.send_text(b"x")
    session.send_binary(b"x")
    session.send_ping(b"x")
    session.send_close(1000)
    assert session.data_to_send() == b""
    assert session.close_sent == 1001


def test_open_session_sends_text_binary_and_ping_frames() -> None:
    """send_text, send_binary and send_ping queue one masked frame each, in order."""
    session = opened()
    session.send_text(b'{"seq":1}')
    session.send_binary(b"\x80\x00")
    session.send_ping(b"\x00\x01")
    assert client_frames(session.data_to_send()) == [
        (Opcode.TEXT, b'{"seq":1}'),
        (Opcode.BINARY, b"\x80\x00"),
        (Opcode.PING, b"\x00\x01"),
    ]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x83, 0)), 1002),  # unknown opcode
        (bytes((0x81, 0x81, 0, 0, 0, 0, 0x41)), 1002),  # masked frame from the server
        (bytes((0x81, 2)) + b"\xc3\x28", 1007),  # invalid UTF-8 (§8.1)
        (bytes((0x82, 126)) + (2000).to_bytes(2, "big"), 1009),  # over max_message_bytes
    ],
)
def test_violation_fails_the_connection_with_a_close_code(frame: bytes, code: int) -> None:
    """A violation queues a Close with 1002 (1007 for bad UTF-8, 1009 when too big)."""
    session = opened()
    session.receive_data(frame)
    (event,) = session.events_received()
    assert isinstance(event, Failed)
    assert event.code == code
    assert event.by_prober is False
    assert client_frames(session.data_to_send()) == [(Opcode.CLOSE, code.to_bytes(2, "big"))]
    assert session.state is State.CLOSED
    session.receive_data(server_frame(Opcode.TEXT, b"after"))
    assert session.events_received() == []


def test_pong_is_reported() -> None:
    """A pong (the answer to our ping) is an event for the caller to match."""
    session = opened()
    session.receive_data(server_frame(Opcode.PONG, b"\x00\x01"))
    assert session.events_received() == [Pong(b"\x00\x01")]


def test_close_before_the_upgrade_sends_nothing() -> None:
    """send_close while CONNECTING ends the session at once; there is no frame to send."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.data_to_send()
    session.send_close(1000)
    assert session.state is State.CLOSED
    assert session.data_to_send() == b""
    session.receive_data(GOOD_HEAD)
    assert session.events_received() == []


def test_eof_closes_the_session() -> None:
    """The end of the stream leaves the session CLOSED; later bytes are discarded."""
    session = opened()
    session.receive_eof()
    assert session.state is State.CLOSED
    session.receive_data(server_frame(Opcode.TEXT, b"x"))
    assert session.events_received() == []


def test_a_ping_before_a_violation_in_the_same_read_is_still_answered() -> None:
    """Frames before a violation happened: their pong goes out before the failing close."""
    session = opened()
    session.receive_data(server_frame(Opcode.PING, b"first") + bytes((0x83, 0)))
    events = session.events_received()
    assert events[0] == Ping(b"first")
    assert isinstance(events[1], Failed)
    assert client_frames(session.data_to_send()) == [
        (Opcode.PONG, b"first"),
        (Opcode.CLOSE, (1002).to_bytes(2, "big")),
    ]
