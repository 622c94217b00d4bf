"""Client framing, bytes in and events out (RFC 6455 §5)."""

from __future__ import annotations

import pytest

from spikewatch.errors import MessageTooBigError, ProtocolError
from spikewatch.protocol.frames import (
    MAX_FRAGMENTS,
    Close,
    FrameParser,
    Message,
    Opcode,
    Ping,
    Pong,
    encode_close,
    encode_frame,
    mask_payload,
)

MASK = bytes((0x37, 0xFA, 0x21, 0x3D))


def server_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def test_masked_hello_matches_rfc_example() -> None:
    """Encoding 'Hello' with the RFC 6455 §5.7 mask gives the RFC's bytes."""
    expected = bytes((0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
    assert encode_frame(Opcode.TEXT, b"Hello", MASK) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_lengths_and_masking_round_trip(size: int) -> None:
    """Every length encoding is right, and unmasking the payload gives it back."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = encode_frame(Opcode.BINARY, payload, MASK)
    head = 2 if size < 126 else 4 if size < 65536 else 10
    assert frame[0] == 0x82
    assert frame[1] & 0x80
    assert frame[head : head + 4] == MASK
    assert mask_payload(frame[head + 4 :], MASK) == payload


def test_random_mask_differs_per_frame() -> None:
    """Without an explicit mask every frame gets a fresh one."""
    assert len({encode_frame(Opcode.TEXT, b"x")[2:6] for _ in range(20)}) > 1


def test_close_frame_encoding() -> None:
    """A close frame carries its code and reason, masked."""
    frame = encode_close(1000, "bye")
    assert frame[0] == 0x88
    assert mask_payload(frame[6:], frame[2:6]) == b"\x03\xe8bye"


def test_unmasked_text_and_binary_messages() -> None:
    """Server text becomes str, binary becomes bytes."""
    parser = FrameParser(1024)
    data = server_frame(1, b"Hello") + server_frame(2, b"\x00\x01")
    assert parser.feed(data) == [Message("Hello"), Message(b"\x00\x01")]


def test_byte_at_a_time_gives_the_same_events() -> None:
    """Feeding one byte at a time yields the same events as all at once."""
    data = (
        server_frame(1, b"Hello")
        + server_frame(2, b"x" * 300)
        + server_frame(9, b"p")
        + server_frame(2, b"y" * 70000)
    )
    parser = FrameParser(100_000)
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    assert events == FrameParser(100_000).feed(data)
    assert events[1] == Message(b"x" * 300)
    assert events[3] == Message(b"y" * 70000)


def test_fragmented_message_with_interleaved_ping() -> None:
    """Fragments reassemble into one message; a control frame may come between them."""
    data = server_frame(1, b"Hel", fin=False) + server_frame(9, b"ping") + server_frame(0, b"lo")
    assert FrameParser(1024).feed(data) == [Ping(b"ping"), Message("Hello")]


def test_ping_pong_and_close_events() -> None:
    """Control frames come out as Ping, Pong and Close events."""
    data = server_frame(9, b"a") + server_frame(10, b"b") + server_frame(8, b"\x03\xe9gone")
    assert FrameParser(10).feed(data) == [Ping(b"a"), Pong(b"b"), Close(1001, "gone")]


def test_close_ends_parsing_and_what_follows_is_discarded() -> None:
    """Bytes after a close frame, in the same feed or later, are dropped unparsed (§5.5.1)."""
    parser = FrameParser(100)
    close = server_frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    assert parser.feed(server_frame(Opcode.TEXT, b"a") + close + b"\xff\xff") == [
        Message("a"),
        Close(1000, ""),
    ]
    assert parser.feed(server_frame(Opcode.TEXT, b"b")) == []


def test_a_message_of_endless_empty_fragments_is_refused() -> None:
    """Past MAX_FRAGMENTS fragments a message is a protocol error, whatever its size."""
    parser = FrameParser(100)
    empty = server_frame(Opcode.CONTINUATION, b"", fin=False)
    start = server_frame(Opcode.TEXT, b"", fin=False)
    assert parser.feed(start + empty * (MAX_FRAGMENTS - 2)) == []
    assert parser.feed(server_frame(Opcode.CONTINUATION, b"ok")) == [Message("ok")]
    with pytest.raises(ProtocolError, match="more than 1024 fragments"):
        parser.feed(start + empty * MAX_FRAGMENTS)


def test_close_without_payload_and_private_code() -> None:
    """An empty close has no code; application codes 3000-4999 are allowed."""
    assert FrameParser(10).feed(server_frame(8, b"")) == [Close(None, "")]
    assert FrameParser(10).feed(server_frame(8, (4000).to_bytes(2, "big"))) == [Close(4000, "")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (server_frame(1, b"x", rsv=0x40), "reserved bits"),
        (bytes((0x81, 0x81)) + MASK + b"x", "masked frame"),
        (server_frame(3, b""), "unknown opcode"),
        (server_frame(0xB, b""), "control frame|unknown opcode"),
        (server_frame(9, b"x", fin=False), "control frame"),
        (bytes((0x89, 126, 0, 126)) + b"x" * 126, "control frame"),
        (server_frame(0, b"x"), "continuation"),
        (server_frame(1, b"a", fin=False) + server_frame(1, b"b"), "inside a fragmented"),
        (server_frame(1, b"\xff\xfe"), "UTF-8"),
        (server_frame(8, b"\x03"), "1-byte"),
        (server_frame(8, (999).to_bytes(2, "big")), "invalid code"),
        (server_frame(8, (1005).to_bytes(2, "big")), "invalid code"),
        (server_frame(8, b"\x03\xe8\xff"), "UTF-8"),
        (bytes((0x82, 127)) + (1 << 63).to_bytes(8, "big"), "most significant bit"),
    ],
)
def test_violations_are_protocol_errors(data: bytes, message: str) -> None:
    """Each RFC 6455 §5 violation raises a ProtocolError naming it."""
    with pytest.raises(ProtocolError, match=message):
        FrameParser(1024).feed(data)


def test_oversized_frame_is_rejected_from_its_header() -> None:
    """A frame declaring 2^40 bytes fails on its header, before any payload arrives."""
    with pytest.raises(MessageTooBigError, match="exceeds max_message_bytes=1024"):
        FrameParser(1024).feed(bytes((0x82, 127)) + (2**40).to_bytes(8, "big") + b"abc")


def test_oversized_fragmented_message_is_rejected() -> None:
    """Fragments are counted together against the limit."""
    parser = FrameParser(10)
    assert parser.feed(server_frame(2, b"123456", fin=False)) == []
    with pytest.raises(MessageTooBigError):
        parser.feed(server_frame(0, b"123456"))


def test_message_exactly_at_limit_is_accepted() -> None:
    """A message of exactly max_message_bytes is fine."""
    assert FrameParser(300).feed(server_frame(2, b"z" * 300)) == [Message(b"z" * 300)]


def test_incomplete_extended_lengths_wait() -> None:
    """Partial 16-bit and 64-bit length headers wait for more bytes."""
    parser = FrameParser(100_000)
    assert parser.feed(bytes((0x82, 126, 0))) == []
    assert parser.feed(bytes((200,)) + b"q" * 200) == [Message(b"q" * 200)]
    assert parser.feed(bytes((0x82, 127, 0, 0, 0))) == []
    assert parser.feed(bytes((0, 0, 0, 0, 3)) + b"abc") == [Message(b"abc")]
