"""The opening handshake, bytes in and out (RFC 6455 §4)."""

from __future__ import annotations

import pytest

from spikewatch.errors import ProtocolError
from spikewatch.protocol.handshake import (
    MAX_HEAD_BYTES,
    UpgradeRequest,
    accept_for,
    check_upgrade,
    new_key,
    parse_response_head,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def answer(*headers: str, status: str = "101 Switching Protocols") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


GOOD = answer("Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}")


def test_accept_matches_rfc_example() -> None:
    """The accept value for the RFC 6455 §1.3 sample key is the RFC's."""
    assert accept_for(KEY) == ACCEPT


def test_new_key_is_16_random_bytes_base64() -> None:
    """Every key is 24 base64 characters and keys differ."""
    keys = {new_key() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(k) == 24 for k in keys)


def test_request_has_the_mandatory_headers_in_order() -> None:
    """The request carries Host, Upgrade, Connection, version, custom headers and the key."""
    req = UpgradeRequest(
        resource="/ws?x=1", host_header="example.com:8080", headers=[("X-Client", "sw")]
    )
    text = req.render(KEY).decode()
    assert text.startswith("GET /ws?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n")
    assert "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" in text
    assert "X-Client: sw\r\n" in text
    assert text.endswith(f"Sec-WebSocket-Key: {KEY.decode()}\r\n\r\n")
    assert "Sec-WebSocket-Protocol" not in text


def test_request_with_per_connection_credentials() -> None:
    """Extra headers, query parameters and subprotocols are added for one connection only."""
    req = UpgradeRequest(resource="/ws?x=1", host_header="h", subprotocols=["chat.v1"])
    text = req.render(
        KEY,
        headers=[("Authorization", "Bearer a.b.c")],
        query=[("token", "a b/c")],
        subprotocols=["tok"],
    ).decode()
    assert text.startswith("GET /ws?x=1&token=a%20b%2Fc HTTP/1.1\r\n")
    assert "Authorization: Bearer a.b.c\r\n" in text
    assert "Sec-WebSocket-Protocol: chat.v1, tok\r\n" in text
    plain = req.render(KEY).decode()
    assert "Sec-WebSocket-Protocol: chat.v1\r\n" in plain
    assert "Authorization" not in plain
    assert req.subprotocols == ("chat.v1",)
    assert (
        "GET /ws?x=1&t=1 "
        in UpgradeRequest(resource="/ws?x=1", host_header="h")
        .render(KEY, query=[("t", "1")])
        .decode()
    )


@pytest.mark.parametrize(("name", "value"), [("X-A", "b\r\nEvil: 1"), ("X:A", "b"), ("X\nA", "b")])
def test_header_injection_is_refused(name: str, value: str) -> None:
    """A header with a line break (or a colon in its name) is refused, never sent."""
    with pytest.raises(ValueError, match="line break"):
        UpgradeRequest(resource="/", host_header="h", headers=[(name, value)])
    with pytest.raises(ValueError, match="line break"):
        UpgradeRequest(resource="/", host_header="h").render(KEY, headers=[(name, value)])


def test_parse_complete_answer_reports_its_length() -> None:
    """A complete head parses to status, reason and lower-cased headers; the rest is left."""
    parsed = parse_response_head(GOOD + b"\x81\x00")
    assert parsed is not None
    response, used = parsed
    assert used == len(GOOD)
    assert response.status == 101
    assert response.reason == "Switching Protocols"
    assert response.header("upgrade") == "websocket"
    assert response.header("missing") is None


def test_parse_waits_for_the_whole_head() -> None:
    """Every strict prefix of a valid head asks for more bytes."""
    for cut in range(1, len(GOOD)):
        assert parse_response_head(GOOD[:cut]) is None


def test_repeated_headers_are_joined() -> None:
    """Repeated header lines read as one comma-separated value."""
    parsed = parse_response_head(answer("Connection: keep-alive", "Connection: Upgrade"))
    assert parsed is not None
    assert parsed[0].header("connection") == "keep-alive, Upgrade"


def test_status_without_reason() -> None:
    """A status line without a reason phrase is accepted."""
    parsed = parse_response_head(b"HTTP/1.1 503\r\n\r\n")
    assert parsed is not None
    assert (parsed[0].status, parsed[0].reason) == (503, "")


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"H",  # a prefix of HTTP is fine, checked below; this is its own case
        b"<html>",
        b"HTTP/2 101\r\n\r\n",
        b"HTTP/1.1 1O1 Switching\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nbad header line\r\n\r\n",
        b"HTTP/1.1 101 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nName : value\r\n\r\n",
    ],
)
def test_malformed_answers_are_protocol_errors(data: bytes) -> None:
    """Garbage, a wrong version, a bad status code or header line is a protocol error."""
    if data == b"H":
        assert parse_response_head(data) is None
        return
    with pytest.raises(ProtocolError):
        parse_response_head(data)


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503, "Service Unavailable"),
        (b"HTTP/1.0 200 OK\r\nServer: old-proxy\r\n\r\n", 200, "OK"),
        (b"HTTP/1.1 503 \r\n\r\n", 503, ""),
        (
            b"HTTP/1.1 101 Switching  Protocols\t(really)\r\n\r\n",
            101,
            "Switching  Protocols\t(really)",
        ),
        (b"HTTP/1.1 404 Nicht gefunden \xe4\r\n\r\n", 404, "Nicht gefunden \xe4"),
        (b"HTTP/1.1 600 Odd\r\n\r\n", 600, "Odd"),
    ],
)
def test_status_lines_rfc_9112_allows(data: bytes, status: int, reason: str) -> None:
    """HTTP/1.0 for a non-101 status, an empty reason, tabs and obs-text in it parse."""
    parsed = parse_response_head(data)
    assert parsed is not None
    assert (parsed[0].status, parsed[0].reason) == (status, reason)


def test_http_1_0_cannot_switch_protocols() -> None:
    """A 101 over HTTP/1.0 is refused, naming the likely HTTP/1.0 proxy (RFC 9110 §15.2)."""
    with pytest.raises(ProtocolError, match=r"'101' over HTTP/1\.0.*proxy"):
        parse_response_head(b"HTTP/1.0 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTP/1.2 101 OK\r\n\r\n", "version must be HTTP/1.1"),
        (b"HTTP/2.0 101 OK\r\n\r\n", "version must be HTTP/1.1"),
        (b"HTTP/1.1\t101 OK\r\n\r\n", "version must be HTTP/1.1"),
        (b"HTTP/1.1  101 OK\r\n\r\n", "status code"),
        (b"HTTP/1.1 10 OK\r\n\r\n", "status code"),
        (b"HTTP/1.1 1011 OK\r\n\r\n", "status code"),
        (b"HTTP/1.1 101\tOK\r\n\r\n", "status code"),
        (b"HTTP/1.1 1\xb21 OK\r\n\r\n", "status code"),  # latin-1 superscript two
        (b"HTTP/1.1 101 O\x00K\r\n\r\n", "reason phrase holds a control"),
        (b"HTTP/1.1 101 OK\r\r\n\r\n", "reason phrase holds a control"),
        (b"HTTP/1.1 101 OK\nUpgrade: websocket\r\n\r\n", "reason phrase holds a control"),
        (b"HTTP/1.1 101 OK\x7f\r\n\r\n", "reason phrase holds a control"),
    ],
)
def test_status_line_violations(data: bytes, message: str) -> None:
    """A status line off RFC 9112 §4 (version, separators, 3 digits, reason) is refused."""
    with pytest.raises(ProtocolError, match=message):
        parse_response_head(data)


@pytest.mark.parametrize("name", ["X-A", "x_a", "!#$%&'*+-.^_`|~", "Sec-WebSocket-Accept", "0"])
def test_token_header_names_are_accepted(name: str) -> None:
    """Every tchar of RFC 9110 §5.6.2 may appear in a header name."""
    parsed = parse_response_head(answer(f"{name}: v"))
    assert parsed is not None
    assert parsed[0].headers == ((name.lower(), "v"),)


@pytest.mark.parametrize(
    "name",
    [b"Bad Name", b"X-A ", b"", b"(x)", b"a/b", b"a@b", b"x\x00y", b"caf\xe9", b'"q"', b"a\x7f"],
)
def test_header_names_that_are_not_tokens_are_refused(name: bytes) -> None:
    """A header name with a space, a separator, a control or non-ASCII is refused (§5.1)."""
    data = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n" + name + b": v\r\n\r\n"
    with pytest.raises(ProtocolError, match="malformed header name"):
        parse_response_head(data)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"plain", "plain"),
        (b" \t spaced out \t ", "spaced out"),
        (b"inner\ttab", "inner\ttab"),
        (b"", ""),
        (b"a:b:c", "a:b:c"),
        (b"caf\xe9 \xff", "caf\xe9 \xff"),  # obs-text, read as latin-1
        (b'~!"#()<>@[]{}', '~!"#()<>@[]{}'),
    ],
)
def test_header_values_rfc_9110_allows(value: bytes, expected: str) -> None:
    """Values of VCHAR, SP, HTAB and obs-text parse, without the whitespace around them."""
    parsed = parse_response_head(b"HTTP/1.1 101 OK\r\nX-V:" + value + b"\r\n\r\n")
    assert parsed is not None
    assert parsed[0].header("x-v") == expected


@pytest.mark.parametrize("control", [0x00, 0x01, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B, 0x1F, 0x7F])
def test_control_characters_in_header_values_are_refused(control: int) -> None:
    """NUL, a bare CR or LF, the other C0 controls and DEL in a value are refused (§5.5)."""
    data = b"HTTP/1.1 101 OK\r\nX-V: a" + bytes((control,)) + b"b\r\nUpgrade: websocket\r\n\r\n"
    with pytest.raises(ProtocolError, match="holds a control character"):
        parse_response_head(data)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b" folded: value", "obs-fold"),
        (b"\tfolded", "obs-fold"),
        (b"no colon here", "no colon"),
        (b"Name : value", "malformed header name"),
    ],
)
def test_malformed_header_lines_name_their_fault(line: bytes, message: str) -> None:
    """The error says whether a header line is folded, has no colon or a bad name."""
    data = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n" + line + b"\r\n\r\n"
    with pytest.raises(ProtocolError, match=message):
        parse_response_head(data)


def test_a_bytearray_head_parses_like_bytes() -> None:
    """The engine's growing bytearray buffer parses like the same bytes."""
    assert parse_response_head(bytearray(GOOD)) == parse_response_head(GOOD)


def test_garbage_is_rejected_from_its_first_bytes() -> None:
    """Non-HTTP bytes fail at once, without waiting for a blank line that never comes."""
    with pytest.raises(ProtocolError, match="not HTTP"):
        parse_response_head(b"\x16\x03\x01")


def test_oversized_head_is_rejected() -> None:
    """A head larger than the limit fails, complete or not."""
    endless = b"HTTP/1.1 101 OK\r\n" + b"X: " + b"a" * MAX_HEAD_BYTES
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_response_head(endless)
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_response_head(endless + b"\r\n\r\n")


def parsed(data: bytes):  # type: ignore[no-untyped-def]
    result = parse_response_head(data)
    assert result is not None
    return result[0]


def test_check_upgrade_accepts_a_correct_answer() -> None:
    """A correct 101 answer passes and selects no subprotocol."""
    assert check_upgrade(parsed(GOOD), KEY, ()) is None


def test_check_upgrade_returns_selected_subprotocol() -> None:
    """An offered subprotocol chosen by the server is returned."""
    data = answer(
        "Upgrade: WebSocket",
        "Connection: keep-alive, upgrade",
        f"Sec-WebSocket-Accept: {ACCEPT}",
        "Sec-WebSocket-Protocol: chat.v1",
    )
    assert check_upgrade(parsed(data), KEY, ("chat.v1",)) == "chat.v1"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (("Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"), "Upgrade: websocket"),
        (("Upgrade: websocket", f"Sec-WebSocket-Accept: {ACCEPT}"), "Connection: Upgrade"),
        (("Upgrade: websocket", "Connection: Upgrade"), "Sec-WebSocket-Accept"),
        (
            ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: AAAA"),
            "Sec-WebSocket-Accept",
        ),
        (
            (
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Accept: {ACCEPT}",
                "Sec-WebSocket-Extensions: permessage-deflate",
            ),
            "extension",
        ),
        (
            (
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Accept: {ACCEPT}",
                "Sec-WebSocket-Protocol: other",
            ),
            "not offered",
        ),
    ],
)
def test_check_upgrade_rejects_violations(headers: tuple[str, ...], message: str) -> None:
    """Missing upgrade headers, a wrong accept, an unasked extension or subprotocol fail."""
    with pytest.raises(ProtocolError, match=message):
        check_upgrade(parsed(answer(*headers)), KEY, ("chat.v1",))
