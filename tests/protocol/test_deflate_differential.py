"""Compressed server streams fed to the session and to websockets' ClientProtocol with its
PerMessageDeflate extension, agreed on the same parameters; and what the session sends,
decoded by websockets' extension as a server would.

The streams mix compressed messages (one server context, or a fresh one per message when
server_no_context_takeover was agreed), plain ones, fragments with control frames between
them, and end cleanly, with a close, or with a violation (RSV1 on a control frame or a
continuation, data that is not deflate, a bomb past the size bound). Both must agree on
the messages, the pongs, the close code sent and whether the connection failed.

As in test_session_differential.py, websockets' sans-I/O layer does not check UTF-8; its
assembler does later, so only valid text is drawn for text messages here.
"""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.protocol import State as WsState
from websockets.uri import parse_uri

from spikewatch.protocol.deflate import DeflateOffer
from spikewatch.protocol.frames import Close, Message, Opcode, Ping, Pong
from spikewatch.protocol.session import ClientSession, Failed, Upgraded
from tests.protocol.test_deflate import KEY, head
from tests.protocol.test_session_differential import (
    client_frames,
    frame,
    one_pong_per_read,
    reads,
)

MAX_SIZE = 2000


@st.composite
def agreement(draw: st.DrawFn) -> tuple[bool, bool, int, int]:
    """server_no_context_takeover, client_no_context_takeover, server bits, client bits."""
    return (
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.integers(9, 15)),
        draw(st.integers(9, 15)),
    )


def answer(server_nct: bool, client_nct: bool, server_bits: int, client_bits: int) -> str:
    parts = ["permessage-deflate"]
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")
    parts += [f"server_max_window_bits={server_bits}", f"client_max_window_bits={client_bits}"]
    return "; ".join(parts)


class Server:
    """The server's compressor, with or without context takeover."""

    def __init__(self, no_context_takeover: bool, bits: int) -> None:
        self.reset = no_context_takeover
        self.bits = bits
        self.c = zlib.compressobj(wbits=-bits)

    def squeeze(self, data: bytes) -> bytes:
        if self.reset:
            self.c = zlib.compressobj(wbits=-self.bits)
        out = self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]


control = st.one_of(
    st.binary(max_size=125).map(lambda p: frame(Opcode.PING, p)),
    st.binary(max_size=125).map(lambda p: frame(Opcode.PONG, p)),
)


@st.composite
def message(draw: st.DrawFn, server: Server) -> bytes:
    """One data message, compressed or not, maybe fragmented, controls between fragments."""
    text = draw(st.booleans())
    if text:
        data = draw(st.text(max_size=150)).encode()
    else:
        data = draw(st.binary(max_size=300)) * draw(st.integers(1, 3))
    packed = draw(st.integers(0, 3)) > 0
    payload = server.squeeze(data) if packed else data
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        first = i == 0
        opcode = (Opcode.TEXT if text else Opcode.BINARY) if first else Opcode.CONTINUATION
        out += frame(opcode, piece, fin=i == len(pieces) - 1, rsv=4 if packed and first else 0)
        if i < len(pieces) - 1 and draw(st.booleans()):
            out += draw(control)
    return out


@st.composite
def stream(draw: st.DrawFn) -> tuple[tuple[bool, bool, int, int], bytes, list[int]]:
    agreed = draw(agreement())
    server = Server(agreed[0], agreed[2])
    data = b"".join(
        draw(st.lists(st.one_of(message(server), control), max_size=6))  # type: ignore[arg-type]
    )
    ending = draw(st.sampled_from(["none", "close", "violation"]))
    if ending == "close":
        data += frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
    elif ending == "violation":
        squeezed = server.squeeze(b"ab")
        data += draw(
            st.sampled_from(
                [
                    frame(Opcode.PING, b"x", rsv=4),
                    frame(Opcode.TEXT, squeezed[:1], fin=False, rsv=4)
                    + frame(Opcode.CONTINUATION, squeezed[1:], rsv=4),
                    frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv=4),
                    frame(Opcode.BINARY, server.squeeze(bytes(MAX_SIZE * 50)), rsv=4),
                ]
            )
        )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return agreed, data, cuts


def run_websockets(
    agreed: tuple[bool, bool, int, int], chunks: list[bytes]
) -> tuple[list[object], list[tuple[int, bytes]], bool]:
    server_nct, client_nct, server_bits, client_bits = agreed
    proto = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=WsState.OPEN, max_size=MAX_SIZE)
    proto.extensions = [PerMessageDeflate(server_nct, client_nct, server_bits, client_bits)]
    events: list[object] = []
    out: list[bytes] = []
    parts: list[bytes] = []
    text = False
    failed = False
    for chunk in chunks:
        proto.receive_data(chunk)
        for f in proto.events_received():
            if f.opcode is WsOpcode.PING:
                events.append(Ping(bytes(f.data)))
            elif f.opcode is WsOpcode.PONG:
                events.append(Pong(bytes(f.data)))
            elif f.opcode is WsOpcode.CLOSE:
                events.append(("close", int.from_bytes(f.data[:2], "big")))
            else:
                if f.opcode is not WsOpcode.CONT:
                    text, parts = f.opcode is WsOpcode.TEXT, []
                parts.append(bytes(f.data))
                if f.fin:
                    data = b"".join(parts)
                    events.append(Message(data.decode() if text else data))
        out += one_pong_per_read(b"".join(proto.data_to_send()))
        if proto.parser_exc is not None:
            failed = True
            break
    return events, client_frames(out), failed


def run_spikewatch(
    agreed: tuple[bool, bool, int, int], chunks: list[bytes]
) -> tuple[list[object], list[tuple[int, bytes]], bool]:
    session = ClientSession(
        b"GET / HTTP/1.1\r\n\r\n",
        KEY,
        (),
        MAX_SIZE,
        deflate=DeflateOffer(max_decompressed_bytes=MAX_SIZE),
    )
    session.data_to_send()
    session.receive_data(head(answer(*agreed)))
    assert isinstance(session.events_received()[0], Upgraded)
    events: list[object] = []
    out: list[bytes] = []
    failed = False
    for chunk in chunks:
        session.receive_data(chunk)
        for event in session.events_received():
            if isinstance(event, Failed):
                failed = True
            elif isinstance(event, Close):
                events.append(("close", event.code))
            else:
                events.append(event)
        out.append(session.data_to_send())
    return events, client_frames(out), failed


@settings(max_examples=300, deadline=None)
@given(stream())
def test_session_agrees_with_websockets_on_compressed_streams(
    generated: tuple[tuple[bool, bool, int, int], bytes, list[int]],
) -> None:
    """Messages, control frames, what is sent back and failure agree with websockets."""
    agreed, data, cuts = generated
    chunks = reads(data, cuts)
    ours, theirs = run_spikewatch(agreed, chunks), run_websockets(agreed, chunks)
    assert ours == theirs


@settings(max_examples=100, deadline=None)
@given(
    agreement(),
    st.lists(st.one_of(st.text(max_size=200).map(str.encode), st.binary(max_size=500)), max_size=6),
)
def test_what_the_session_sends_websockets_decodes(
    agreed: tuple[bool, bool, int, int], messages: list[bytes]
) -> None:
    """Every message the session compresses decodes in websockets' server-side extension
    (its remote parameters are the client's), in order, context carried over or not."""
    server_nct, client_nct, server_bits, client_bits = agreed
    session = ClientSession(b"GET / HTTP/1.1\r\n\r\n", KEY, (), MAX_SIZE, deflate=DeflateOffer())
    session.receive_data(head(answer(*agreed)))
    session.data_to_send()
    for data in messages:
        session.send_binary(data)
    sent = session.data_to_send()
    server = PerMessageDeflate(client_nct, server_nct, client_bits, server_bits)
    decoded = []
    pos = 0
    for opcode, payload in client_frames([sent]):
        assert opcode == Opcode.BINARY
        assert sent[pos] == 0xC2  # final, RSV1, binary
        pos += _frame_size(sent, pos)
        f = server.decode(Frame(WsOpcode.BINARY, payload, rsv1=True))
        decoded.append(bytes(f.data))
    assert decoded == messages


def _frame_size(data: bytes, pos: int) -> int:
    n = data[pos + 1] & 0x7F
    if n == 126:
        return 4 + 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    if n == 127:
        return 10 + 4 + int.from_bytes(data[pos + 2 : pos + 10], "big")
    return 2 + 4 + n
