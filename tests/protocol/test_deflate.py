"""permessage-deflate (RFC 7692), sans I/O: the offer, the answer's checks, compressed
messages both ways, context takeover, bounds on decompression, and the config."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from spikewatch.config import parse_config
from spikewatch.config.compression import CompressionConfig
from spikewatch.core.attempt import DEFLATE_DECLINED, Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.result import count_deflate_declined
from spikewatch.engine.spec import build_connection_spec
from spikewatch.errors import ProtocolError
from spikewatch.protocol.deflate import (
    DeflateOffer,
    DeflateParams,
    Deflater,
    Inflater,
    parse_extensions,
)
from spikewatch.protocol.frames import Message, Opcode, Ping
from spikewatch.protocol.handshake import accept_for
from spikewatch.protocol.receive_budget import ReceiveBudget
from spikewatch.protocol.session import ClientSession, Failed, State, Upgraded
from tests.protocol.test_session_differential import frame

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
REQUEST = b"GET / HTTP/1.1\r\n\r\n"
TAIL = b"\x00\x00\xff\xff"


def head(extensions: str | None) -> bytes:
    line = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions is not None else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(KEY)}\r\n{line}\r\n"
    ).encode()


def upgrade(
    answer: str | None = "permessage-deflate",
    offer: DeflateOffer | None = None,
    *,
    max_message: int = 100_000,
    budget: ReceiveBudget | None = None,
) -> tuple[ClientSession, list[object]]:
    """A session that offered ``offer`` (the default offer), fed the answer ``answer``."""
    session = ClientSession(
        REQUEST, KEY, (), max_message, budget, deflate=offer if offer else DeflateOffer()
    )
    session.data_to_send()
    session.receive_data(head(answer))
    return session, list(session.events_received())


def agreed(answer: str = "permessage-deflate", **offer: object) -> ClientSession:
    session, events = upgrade(answer, DeflateOffer(**offer))  # type: ignore[arg-type]
    assert isinstance(events[0], Upgraded)
    assert session.deflate is not None
    return session


def squeeze(data: bytes, compressor: zlib._Compress | None = None) -> bytes:
    """Compress one message as a server does (RFC 7692 §7.2.1), a fresh context unless given."""
    c = compressor or zlib.compressobj(wbits=-15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def compressed(opcode: int, data: bytes, compressor: zlib._Compress | None = None) -> bytes:
    return frame(opcode, squeeze(data, compressor), rsv=4)


def client_messages(data: bytes) -> list[tuple[int, bytes]]:
    """The client's frames: (first byte, unmasked payload) each."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        mask = data[pos + at : pos + at + 4]
        body = data[pos + at + 4 : pos + at + 4 + n]
        out.append((b0, bytes(b ^ mask[i % 4] for i, b in enumerate(body))))
        pos += at + 4 + n
    return out


def failed(session: ClientSession, data: bytes) -> Failed:
    session.receive_data(data)
    events = session.events_received()
    assert isinstance(events[-1], Failed), events
    assert session.state is State.CLOSED
    return events[-1]


def sent_close_code(session: ClientSession) -> int:
    (b0, payload), *_ = client_messages(session.data_to_send())[-1:]
    assert b0 & 0x0F == Opcode.CLOSE
    return int.from_bytes(payload[:2], "big")


# -- the offer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "header"),
    [
        (DeflateOffer(), "permessage-deflate; client_max_window_bits"),
        (
            DeflateOffer(client_max_window_bits=10, server_max_window_bits=12),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        (
            DeflateOffer(server_no_context_takeover=True, client_no_context_takeover=True),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits",
        ),
    ],
)
def test_the_offer_header(offer: DeflateOffer, header: str) -> None:
    """The offer names what was configured, 15 (the default) only as a bare parameter."""
    assert offer.header_value == header


# -- the answer ---------------------------------------------------------------------------

NEGOTIATION = [
    # (offer, answer, agreed: client bits, server bits, client nct, server nct)
    ({}, "permessage-deflate", (15, 15, False, False)),
    ({}, "PerMessage-Deflate ;client_max_window_bits=9", (9, 15, False, False)),
    ({}, "permessage-deflate; server_max_window_bits=8", (15, 8, False, False)),
    ({}, 'permessage-deflate; server_max_window_bits="10"', (15, 10, False, False)),
    ({}, "permessage-deflate; server_no_context_takeover", (15, 15, False, True)),
    ({}, "permessage-deflate; client_no_context_takeover", (15, 15, True, False)),
    ({"client_no_context_takeover": True}, "permessage-deflate", (15, 15, True, False)),
    ({"client_max_window_bits": 12}, "permessage-deflate", (12, 15, False, False)),
    (
        {"client_max_window_bits": 12},
        "permessage-deflate; client_max_window_bits=10",
        (10, 15, False, False),
    ),
    (
        {"server_max_window_bits": 12},
        "permessage-deflate; server_max_window_bits=12",
        (15, 12, False, False),
    ),
    (
        {"server_max_window_bits": 12},
        "permessage-deflate; server_max_window_bits=9",
        (15, 9, False, False),
    ),
    (
        {"server_no_context_takeover": True},
        "permessage-deflate; server_no_context_takeover",
        (15, 15, False, True),
    ),
]


@pytest.mark.parametrize(("offer", "answer", "expected"), NEGOTIATION)
def test_negotiation_matrix(
    offer: dict[str, object], answer: str, expected: tuple[object, ...]
) -> None:
    """Each answer RFC 7692 §7 allows gives the agreed parameters (RFC 7692 §7.1)."""
    session = agreed(answer, **offer)
    assert session.deflate == DeflateParams(*expected)  # type: ignore[arg-type]
    assert session.state is State.OPEN


REFUSALS = [
    (
        {},
        "x-webkit-deflate-frame",
        "selected extension 'x-webkit-deflate-frame', which was not offered",
    ),
    ({}, "permessage-deflate, x-foo", "'x-foo', which was not offered"),
    ({}, "permessage-deflate, permessage-deflate", "selected permessage-deflate 2 times"),
    ({}, "permessage-deflate; foo=1", "unknown parameter 'foo'"),
    (
        {},
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "repeats server_max_window_bits",
    ),
    (
        {},
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "repeats client_no_context_takeover",
    ),
    (
        {},
        "permessage-deflate; server_no_context_takeover=1",
        "gives server_no_context_takeover a value",
    ),
    (
        {},
        "permessage-deflate; server_max_window_bits=16",
        "server_max_window_bits='16'; it must be a whole number from 8 to 15",
    ),
    ({}, "permessage-deflate; server_max_window_bits=7", "server_max_window_bits='7'"),
    ({}, "permessage-deflate; server_max_window_bits=010", "server_max_window_bits='010'"),
    ({}, "permessage-deflate; server_max_window_bits", "server_max_window_bits=None"),
    (
        {},
        "permessage-deflate; client_max_window_bits=8",
        "zlib cannot compress with a window below 2^9",
    ),
    (
        {"client_max_window_bits": 10},
        "permessage-deflate; client_max_window_bits=11",
        "client_max_window_bits=11, above the 10 offered",
    ),
    (
        {"server_max_window_bits": 10},
        "permessage-deflate; server_max_window_bits=11",
        "server_max_window_bits=11, above the 10 offered",
    ),
    (
        {"server_max_window_bits": 10},
        "permessage-deflate",
        "without server_max_window_bits, which was offered as 10",
    ),
    (
        {"server_no_context_takeover": True},
        "permessage-deflate",
        "without server_no_context_takeover, which was offered",
    ),
    ({}, "permessage-deflate; =1", "malformed Sec-WebSocket-Extensions answer"),
    ({}, "permessage deflate", "malformed Sec-WebSocket-Extensions answer"),
    ({}, 'permessage-deflate; server_max_window_bits="1 0"', "a quoted value must be a token"),
]


@pytest.mark.parametrize(("offer", "answer", "detail"), REFUSALS)
def test_answers_rfc_7692_does_not_allow_fail_the_upgrade(
    offer: dict[str, object], answer: str, detail: str
) -> None:
    """Each bad answer fails the connection before it opens, with a detail naming why."""
    session, events = upgrade(answer, DeflateOffer(**offer))  # type: ignore[arg-type]
    assert len(events) == 1
    assert isinstance(events[0], Failed)
    assert detail in events[0].detail
    assert events[0].code is None  # no WebSocket connection to send a close frame on
    assert session.state is State.CLOSED


def test_an_extension_answered_without_an_offer_is_still_refused() -> None:
    """Without compression configured, any extension in the answer fails (RFC 6455 §4.1)."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.receive_data(head("permessage-deflate"))
    (event,) = session.events_received()
    assert isinstance(event, Failed)
    assert event.detail == "the server selected an extension that was not offered"


def test_quoted_values_are_unquoted() -> None:
    """A quoted-string value is a token once unescaped (RFC 6455 §9.1)."""
    assert parse_extensions('a; b="1\\0"; c , d') == [("a", [("b", "10"), ("c", None)]), ("d", [])]


# -- declined -----------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [None, "  "])
def test_a_declined_offer_opens_uncompressed_and_says_so(answer: str | None) -> None:
    """No extension in the answer: the connection opens plain, the session says declined."""
    session, events = upgrade(answer)
    assert isinstance(events[0], Upgraded)
    assert session.deflate is None
    assert session.deflate_declined
    session.send_text(b"plain")
    assert client_messages(session.data_to_send()) == [(0x81, b"plain")]
    detail = failed(session, compressed(Opcode.TEXT, b"x")).detail
    assert detail == "reserved bits set but no extension was negotiated (§5.2)"


def test_without_an_offer_nothing_is_declined() -> None:
    """A session that offered nothing reports no decline."""
    session = ClientSession(REQUEST, KEY, (), 1000)
    session.receive_data(head(None))
    (event,) = session.events_received()
    assert isinstance(event, Upgraded)
    assert (session.deflate, session.deflate_declined) == (None, False)


def test_a_declined_success_is_counted_in_the_run_detail() -> None:
    """The note made at the upgrade survives a success and is counted; a failure replaces it."""
    ok, bad, plain = (Attempt(Phase.SPIKE, n) for n in range(3))
    for attempt in (ok, bad):
        attempt.detail = DEFLATE_DECLINED
    ok.decide(Outcome.OK, "", 1.0)
    bad.decide(Outcome.TIMEOUT, "no echo answer within 2s", 1.0)
    plain.decide(Outcome.OK, "", 1.0)
    assert ok.detail == DEFLATE_DECLINED
    assert bad.detail == "no echo answer within 2s"
    assert count_deflate_declined([ok, bad, plain]) == 1


# -- messages both ways --------------------------------------------------------------------


def test_messages_sent_are_compressed_with_rsv1() -> None:
    """Text and binary go out compressed, RSV1 set; control frames never are."""
    session = agreed()
    session.send_text(b"hello hello hello")
    session.send_binary(b"\x00\x01" * 20)
    session.send_ping(b"p")
    (t0, text), (b0, binary), (p0, ping) = client_messages(session.data_to_send())
    assert (t0, b0, p0) == (0xC1, 0xC2, 0x89)
    d = zlib.decompressobj(wbits=-15)
    assert d.decompress(text + TAIL) == b"hello hello hello"
    assert d.decompress(binary + TAIL) == b"\x00\x01" * 20
    assert ping == b"p"


def test_client_context_takeover_reuses_the_window() -> None:
    """With takeover the second identical message refers back; without, it stands alone."""
    keep = agreed()
    fresh = agreed(client_no_context_takeover=True)
    message = b"the quick brown fox jumps over the lazy dog"
    for session in (keep, fresh):
        session.send_text(message)
        session.send_text(message)
    (_, k1), (_, k2) = client_messages(keep.data_to_send())
    (_, f1), (_, f2) = client_messages(fresh.data_to_send())
    assert len(k2) < len(k1) // 2
    assert f1 == f2
    d = zlib.decompressobj(wbits=-15)  # the server's one context decodes both
    assert [d.decompress(k1 + TAIL), d.decompress(k2 + TAIL)] == [message, message]
    for payload in (f1, f2):
        assert zlib.decompressobj(wbits=-15).decompress(payload + TAIL) == message


def test_the_client_window_follows_the_agreement() -> None:
    """A 9-bit client window: the server decodes with 2^9 bytes of history."""
    session = agreed("permessage-deflate; client_max_window_bits=9")
    data = bytes(range(256)) * 8
    session.send_binary(data)
    ((_, payload),) = client_messages(session.data_to_send())
    assert zlib.decompressobj(wbits=-9).decompress(payload + TAIL) == data


def test_server_context_takeover_is_followed() -> None:
    """Messages compressed in one server context decode in order."""
    session = agreed()
    c = zlib.compressobj(wbits=-15)
    message = b"a message that repeats, a message that repeats"
    session.receive_data(compressed(Opcode.TEXT, message, c) + compressed(Opcode.TEXT, message, c))
    assert session.events_received() == [Message(message.decode())] * 2


def test_server_no_context_takeover_keeps_no_decompressor() -> None:
    """Agreed server_no_context_takeover: each message decodes alone, nothing is kept,
    and a server that refers back anyway fails the connection with 1002."""
    session = agreed("permessage-deflate; server_no_context_takeover")
    parser = session._parser
    assert parser is not None
    assert parser.inflater is not None
    message = b"a message that repeats, a message that repeats"
    session.receive_data(compressed(Opcode.TEXT, message) + compressed(Opcode.TEXT, message))
    assert session.events_received() == [Message(message.decode())] * 2
    assert not parser.inflater.holding
    c = zlib.compressobj(wbits=-15)
    session.receive_data(compressed(Opcode.TEXT, message, c))
    assert session.events_received() == [Message(message.decode())]
    detail = failed(session, compressed(Opcode.TEXT, message, c)).detail
    assert "not valid deflate data" in detail
    assert sent_close_code(session) == 1002


def test_objects_are_made_lazily() -> None:
    """Nothing of zlib exists until a message needs it; with takeover it is kept after."""
    deflater = Deflater(DeflateParams(15, 15, False, False))
    inflater = Inflater(DeflateParams(15, 15, False, False), 1000)
    assert not deflater.holding
    assert not inflater.holding
    deflater.compress(b"x")
    assert inflater.inflate(squeeze(b"y"), 1000) == b"y"
    assert deflater.holding
    assert inflater.holding


def test_uncompressed_messages_still_pass_when_deflate_is_agreed() -> None:
    """RSV1 clear: the message is taken as it is (RFC 7692 §6.1)."""
    session = agreed()
    session.receive_data(frame(Opcode.TEXT, b"plain") + frame(Opcode.BINARY, b"\x00"))
    assert session.events_received() == [Message("plain"), Message(b"\x00")]


def test_fragmented_compressed_messages() -> None:
    """RSV1 on the first frame only; pings between fragments; text and binary."""
    session = agreed()
    payload = squeeze(b"fragmented and compressed " * 10)
    a, b, c = payload[:5], payload[5:20], payload[20:]
    data = (
        frame(Opcode.TEXT, a, fin=False, rsv=4)
        + frame(Opcode.PING, b"between")
        + frame(Opcode.CONTINUATION, b, fin=False)
        + frame(Opcode.CONTINUATION, c)
        + frame(Opcode.BINARY, squeeze(b"\xff" * 50)[:3], fin=False, rsv=4)
        + frame(Opcode.CONTINUATION, squeeze(b"\xff" * 50)[3:])
    )
    for i in range(0, len(data), 7):  # cut into reads
        session.receive_data(data[i : i + 7])
    assert session.events_received() == [
        Ping(b"between"),
        Message("fragmented and compressed " * 10),
        Message(b"\xff" * 50),
    ]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (frame(Opcode.PING, b"x", rsv=4), "RSV1 set on a control frame (RFC 7692 §6.1)"),
        (frame(Opcode.CLOSE, b"", rsv=4), "RSV1 set on a control frame (RFC 7692 §6.1)"),
        (
            frame(Opcode.TEXT, squeeze(b"ab")[:1], fin=False, rsv=4)
            + frame(Opcode.CONTINUATION, squeeze(b"ab")[1:], rsv=4),
            "RSV1 set on a continuation frame (RFC 7692 §6.1)",
        ),
        (frame(Opcode.TEXT, b"x", rsv=2), "RSV2 or RSV3 set; permessage-deflate uses RSV1 only"),
        (frame(Opcode.TEXT, b"x", rsv=5), "RSV2 or RSV3 set"),
        (frame(0x3, b"", rsv=4), "unknown opcode 0x3"),
        (frame(Opcode.TEXT, b"\xff\xff\xff", rsv=4), "not valid deflate data"),
        (
            frame(Opcode.TEXT, zlib.compress(b"x", wbits=-15) + b"junk", rsv=4),
            "data after the final deflate block",
        ),
    ],
)
def test_violations_close_with_1002(data: bytes, detail: str) -> None:
    """RSV1 where RFC 7692 §6.1 forbids it, other reserved bits, bad deflate data: 1002."""
    session = agreed()
    assert detail in failed(session, data).detail
    assert sent_close_code(session) == 1002


def test_a_final_deflate_block_is_accepted() -> None:
    """A server may end a message with a BFINAL block (RFC 7692 §7.2.3); the next message
    starts a new stream."""
    session = agreed()
    one = zlib.compressobj(wbits=-15)
    two = zlib.compressobj(wbits=-15)
    data = one.compress(b"first") + one.flush()
    session.receive_data(frame(Opcode.TEXT, data, rsv=4) + compressed(Opcode.TEXT, b"second", two))
    assert session.events_received() == [Message("first"), Message("second")]


def test_compressed_text_must_be_utf8() -> None:
    """A compressed text message that inflates to bad UTF-8 closes with 1007."""
    session = agreed()
    assert "UTF-8" in failed(session, compressed(Opcode.TEXT, b"\xff\xfe")).detail
    assert sent_close_code(session) == 1007


# -- bounds --------------------------------------------------------------------------------


def test_a_zip_bomb_is_bounded_and_closes_with_1009() -> None:
    """100 MB of zeros in ~100 KB: refused past max_decompressed_bytes, and zlib never
    produced much more than the bound (traced allocations stay under 1 MB)."""
    bomb = squeeze(bytes(100_000_000))
    session, _ = upgrade(
        offer=DeflateOffer(max_decompressed_bytes=10_000), max_message=len(bomb) + 10
    )
    data = frame(Opcode.BINARY, bomb, rsv=4)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        event = failed(session, data)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert event.detail == "message decompresses to more than max_decompressed_bytes=10000"
    assert event.code == 1009
    assert not event.by_prober
    assert sent_close_code(session) == 1009
    assert peak < 3 * len(data) + 1_000_000


def test_a_message_exactly_at_the_bound_passes() -> None:
    """max_decompressed_bytes is inclusive; one byte more is refused."""
    session, _ = upgrade(offer=DeflateOffer(max_decompressed_bytes=1000))
    session.receive_data(compressed(Opcode.BINARY, bytes(1000)))
    assert session.events_received() == [Message(bytes(1000))]
    assert failed(session, compressed(Opcode.BINARY, bytes(1001))).code == 1009


def test_decompressed_bytes_are_charged_to_the_receive_budget() -> None:
    """Within one read, what messages decompress to counts against the shared budget (the
    prober's limit: 1009, by_prober); after the read nothing stays charged."""
    budget = ReceiveBudget(5000)
    session, _ = upgrade(budget=budget)
    session.receive_data(compressed(Opcode.BINARY, bytes(3000)))
    assert session.events_received() == [Message(bytes(3000))]
    assert budget.held == 0
    assert budget.peak >= 3000
    event = failed(
        session, compressed(Opcode.BINARY, bytes(3000)) + compressed(Opcode.BINARY, bytes(3000))
    )
    assert event.by_prober
    assert event.code == 1009
    assert "max_receive_buffer_bytes=5000" in event.detail
    assert budget.refused == 1
    assert budget.held == 0


def test_one_message_larger_than_the_budget_room_is_refused_by_the_budget() -> None:
    """A message within max_decompressed_bytes but past the budget's room: the prober's limit."""
    budget = ReceiveBudget(2000)
    session, _ = upgrade(budget=budget)
    event = failed(session, compressed(Opcode.BINARY, bytes(3000)))
    assert event.by_prober
    assert budget.held == 0


def test_the_compressed_size_is_still_bounded_by_max_message_bytes() -> None:
    """max_message_bytes keeps bounding what is read off the wire, compressed or not."""
    session, _ = upgrade(max_message=200)
    event = failed(session, frame(Opcode.BINARY, b"\x00" * 201, rsv=4))
    assert "max_message_bytes=200" in event.detail


# -- config --------------------------------------------------------------------------------


def config(**target: object) -> dict[str, object]:
    return {
        "targets": [{"name": "t", "url": "ws://127.0.0.1:9/", **target}],
        "scenarios": [{"name": "s", "spike": {"connections": 1}}],
    }


def test_compression_is_off_by_default() -> None:
    """No compression: no offer, no header, the request as before."""
    target = parse_config(config()).targets[0]
    assert target.compression is None
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.deflate is None
    assert b"Extensions" not in spec.render_request(KEY, 1)[0]


def test_compression_config_makes_the_offer() -> None:
    """deflate: true adds the header; max_decompressed_bytes defaults to max_message_bytes."""
    target = parse_config(
        config(compression={"deflate": True, "server_max_window_bits": 10}, max_message_bytes=5000)
    ).targets[0]
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.deflate == DeflateOffer(server_max_window_bits=10, max_decompressed_bytes=5000)
    request = spec.render_request(KEY, 1)[0]
    assert (
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10; "
        b"client_max_window_bits\r\n" in request
    )
    assert CompressionConfig(max_decompressed_bytes=200).offer(5000) == DeflateOffer(
        max_decompressed_bytes=200
    )
    assert CompressionConfig(deflate=False).offer(5000) is None
    off = build_connection_spec(
        parse_config(config(compression={"deflate": False})).targets[0], "h"
    )
    assert off.deflate is None


@pytest.mark.parametrize(
    ("compression", "where"),
    [
        ({"client_max_window_bits": 8}, "client_max_window_bits"),
        ({"server_max_window_bits": 16}, "server_max_window_bits"),
        ({"max_decompressed_bytes": 10}, "max_decompressed_bytes"),
        ({"level": 9}, "level"),
    ],
)
def test_bad_compression_settings_are_refused_at_their_path(
    compression: dict[str, object], where: str
) -> None:
    """Window bits outside 9..15, a tiny bound, unknown keys: refused with the field path."""
    with pytest.raises(Exception, match=rf"compression\.{where}"):
        parse_config(config(compression=compression))


def test_the_extensions_header_points_at_compression() -> None:
    """Sec-WebSocket-Extensions stays refused in headers, and says where it is set."""
    with pytest.raises(Exception, match="is set from compression"):
        parse_config(config(headers={"Sec-WebSocket-Extensions": "permessage-deflate"}))


def test_protocol_error_type_for_bad_answers() -> None:
    """DeflateOffer.accept raises ProtocolError (the session turns it into Failed)."""
    with pytest.raises(ProtocolError):
        DeflateOffer().accept("permessage-deflate; x")
