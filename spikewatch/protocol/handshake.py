"""The client side of the WebSocket opening handshake (RFC 6455 §4), bytes in and out.

Nothing here touches a socket: the engine writes what :meth:`UpgradeRequest.render`
returns and feeds what it reads to :func:`parse_response_head`.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from spikewatch.errors import ProtocolError
from spikewatch.protocol.entropy import random_bytes

#: RFC 6455 §1.3: the GUID appended to the key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: An upgrade answer whose head is larger than this is not a WebSocket server talking.
MAX_HEAD_BYTES = 16 * 1024

_HTTP_PREFIX = b"HTTP/"

#: RFC 9110 §5.6.2: tchar, the characters of a token. A field name is a token (§5.1).
_FIELD_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: RFC 9110 §5.5 and RFC 9112 §4: a field value and a reason phrase hold HTAB, SP, VCHAR
#: and obs-text (0x80-0xFF) only; NUL, CR, LF, the other C0 controls and DEL are refused.
_TEXT = r"[\t\x20-\x7e\x80-\xff]*"
#: The whole head, checked in one pass (it runs once per connection, on the hot path).
#: RFC 9112 §4: ``HTTP-version SP status-code SP [ reason-phrase ]``, with HTTP-version
#: 1.1 or 1.0 (§2.3; 1.0 only for a non-101 status, checked after the match). The last SP
#: may be missing when there is no reason: §4 lets a recipient ignore trailing
#: whitespace, and an answer like "HTTP/1.1 503" is then still classified by its status.
#: RFC 9112 §5: then field lines, each ``field-name ":" OWS field-value OWS``; a line that
#: starts with whitespace (obs-fold, §5.2) is refused, as its name is not a token.
_HEAD = re.compile(rf"HTTP/1\.([01]) ([0-9]{{3}})(?: ({_TEXT}))?((?:\r\n{_FIELD_NAME}:{_TEXT})*)")
_FIELD_NAME_ONLY = re.compile(_FIELD_NAME)
_TEXT_ONLY = re.compile(_TEXT)


def new_key() -> bytes:
    """Return a fresh ``Sec-WebSocket-Key``: 16 random bytes, base64 (RFC 6455 §4.1)."""
    return binascii.b2a_base64(random_bytes(16), newline=False)


def accept_for(key: bytes) -> str:
    """Return the ``Sec-WebSocket-Accept`` value a server must answer ``key`` with."""
    digest = hashlib.sha1(key + _GUID, usedforsecurity=False).digest()
    return binascii.b2a_base64(digest, newline=False).decode()


def _check_header(name: str, value: str) -> None:
    if any(c in name for c in "\r\n:") or any(c in value for c in "\r\n"):
        raise ValueError(f"header {name!r} contains a line break or a colon in its name")


class UpgradeRequest:
    """The upgrade request of one target, encoded once; per connection only the key varies.

    Credentials that differ per connection (a JWT) are passed to :meth:`render` as extra
    headers, query parameters or subprotocols.
    """

    __slots__ = ("_head", "_resource", "_rest", "_subprotocols")

    def __init__(
        self,
        *,
        resource: str,
        host_header: str,
        headers: Iterable[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
    ) -> None:
        fixed = [("Host", host_header), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
        fixed.append(("Sec-WebSocket-Version", "13"))
        for name, value in headers:
            _check_header(name, value)
            fixed.append((name, value))
        self._resource = resource
        self._subprotocols = tuple(subprotocols)
        self._rest = "".join(f"{n}: {v}\r\n" for n, v in fixed).encode("latin-1")
        self._head = self._compose(resource, self._subprotocols, ())

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols every connection offers."""
        return self._subprotocols

    def _compose(
        self,
        resource: str,
        subprotocols: Sequence[str],
        headers: Iterable[tuple[str, str]],
    ) -> bytes:
        extra = "".join(f"{n}: {v}\r\n" for n, v in headers)
        if subprotocols:
            extra += f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}\r\n"
        start = f"GET {resource} HTTP/1.1\r\n".encode("latin-1")
        return start + self._rest + extra.encode("latin-1") + b"Sec-WebSocket-Key: "

    def render(
        self,
        key: bytes,
        *,
        headers: Sequence[tuple[str, str]] = (),
        query: Sequence[tuple[str, str]] = (),
        subprotocols: Sequence[str] = (),
    ) -> bytes:
        """Return the request bytes for one connection with its own key and credentials."""
        if not (headers or query or subprotocols):
            return self._head + key + b"\r\n\r\n"
        resource = self._resource
        if query:
            sep = "&" if "?" in resource else "?"
            resource += sep + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        for name, value in headers:
            _check_header(name, value)
        offered = (*self._subprotocols, *subprotocols)
        return self._compose(resource, offered, headers) + key + b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class UpgradeResponse:
    """The status line and headers of the server's answer to the upgrade request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    _index: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once: the checks look up five headers of every answer.
        index: dict[str, str] = {}
        for name, value in self.headers:
            index[name] = f"{index[name]}, {value}" if name in index else value
        object.__setattr__(self, "_index", index)

    def header(self, name: str) -> str | None:
        """Return the value of header ``name`` (lower case), comma-joining repeats."""
        return self._index.get(name)


def check_response_prefix(data: bytes | bytearray) -> None:
    """Fail fast when the first bytes of the answer cannot start an HTTP response."""
    n = min(len(data), len(_HTTP_PREFIX))
    if data[:n] != _HTTP_PREFIX[:n]:
        raise ProtocolError(f"the upgrade answer is not HTTP: starts with {bytes(data[:24])!r}")


def _head_problem(text: str) -> str:
    """Say what is wrong with a head that :data:`_HEAD` refused."""
    status_line, _, fields = text.partition("\r\n")
    if _HEAD.fullmatch(status_line) is None:
        return _status_line_problem(status_line)
    return _field_lines_problem(fields)


def _status_line_problem(line: str) -> str:
    """Say what is wrong with a status line that :data:`_HEAD` refused."""
    shown = repr(line[:80])
    version, _, rest = line.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        return (
            f"malformed status line {shown}: the version must be HTTP/1.1 "
            "(or HTTP/1.0 for an answer other than 101), then one space (RFC 9112 §4)"
        )
    code = rest.partition(" ")[0]
    if len(code) != 3 or not code.isascii() or not code.isdigit():
        return (
            f"malformed status code in {shown}: three digits after one space, then a space "
            "or the end of the line (RFC 9112 §4)"
        )
    return (
        f"malformed status line {shown}: the reason phrase holds a control character "
        "(RFC 9112 §4 allows tab, space and visible characters)"
    )


def _field_lines_problem(lines: str) -> str:
    """Say what is wrong with the first bad field line."""
    for line in lines.split("\r\n"):  # pragma: no branch - one line is bad
        shown = repr(line[:80])
        name, colon, value = line.partition(":")
        if line[:1] in (" ", "\t"):
            return f"folded header line {shown}: obs-fold is not allowed (RFC 9112 §5.2)"
        if not colon:
            return f"malformed header line {shown}: no colon (RFC 9112 §5)"
        if _FIELD_NAME_ONLY.fullmatch(name) is None:
            return (
                f"malformed header name in {shown}: a name is a token, without spaces, "
                "controls or separators, right before the colon (RFC 9110 §5.1, §5.6.2)"
            )
        if _TEXT_ONLY.fullmatch(value) is None:
            return (
                f"malformed header value in {shown}: it holds a control character "
                "(RFC 9110 §5.5 allows tab, space and visible characters)"
            )
    raise AssertionError("no bad field line")  # pragma: no cover - _HEAD refused one


def parse_response_head(data: bytes | bytearray) -> tuple[UpgradeResponse, int] | None:
    """Parse the answer head once complete; return it with its length, or None for more.

    Raise :class:`ProtocolError` for anything RFC 9112 §4 and §5 do not allow; the
    accepted versions are ``HTTP/1.1``, and ``HTTP/1.0`` for any status but 101.
    """
    check_response_prefix(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise ProtocolError(f"the upgrade answer head exceeds {MAX_HEAD_BYTES} bytes")
        return None
    if end > MAX_HEAD_BYTES:
        raise ProtocolError(f"the upgrade answer head exceeds {MAX_HEAD_BYTES} bytes")
    # latin-1 maps each byte to one character, so the patterns can speak of bytes
    # (obs-text is 0x80-0xFF) and the head is decoded once, never per line.
    text = data[:end].decode("latin-1")
    head = _HEAD.fullmatch(text)
    if head is None:
        raise ProtocolError(_head_problem(text))
    minor, code, reason, fields = head.groups()
    if minor == "0" and code == "101":
        # RFC 9110 §15.2: HTTP/1.0 has no 1xx status; §7.8: an HTTP/1.0 peer ignores
        # Upgrade. RFC 6455 §4.1: the WebSocket handshake is HTTP/1.1.
        raise ProtocolError(
            "the upgrade was answered '101' over HTTP/1.0, which cannot switch protocols "
            "(RFC 9110 §15.2, RFC 6455 §4.1): is an HTTP/1.0 proxy in the way?"
        )
    headers: list[tuple[str, str]] = []
    if fields:
        append = headers.append  # a plain loop: faster here than a regex findall
        for line in fields[2:].split("\r\n"):
            name, _, value = line.partition(":")
            # RFC 9112 §5.1: the whitespace around a field value is not part of it.
            append((name.lower(), value.strip(" \t")))
    return UpgradeResponse(int(code), reason or "", tuple(headers)), end + 4


def check_upgrade(
    response: UpgradeResponse, key: bytes, offered: Sequence[str], *, extensions: bool = False
) -> str | None:
    """Check a 101 answer against RFC 6455 §4.1; return the selected subprotocol.

    The caller handles a status other than 101 first (outcome ``http_status``). With
    ``extensions`` (an extension was offered), the caller checks the answer's
    ``Sec-WebSocket-Extensions`` itself (``protocol/deflate.py``).
    """
    header = response._index.get  # the dict itself: this runs on every answer
    upgrade = header("upgrade")
    if upgrade is None or upgrade.lower() != "websocket":
        raise ProtocolError(f"101 answer without 'Upgrade: websocket' (got {upgrade!r})")
    connection = header("connection") or ""
    if connection.lower() != "upgrade" and "upgrade" not in (
        token.strip().lower() for token in connection.split(",")
    ):
        raise ProtocolError(f"101 answer without 'Connection: Upgrade' (got {connection!r})")
    accept = header("sec-websocket-accept")
    if accept != accept_for(key):
        raise ProtocolError(f"wrong Sec-WebSocket-Accept {accept!r}")
    if not extensions and header("sec-websocket-extensions"):
        # §4.1: the client offered no extension, so the server may not select one.
        raise ProtocolError("the server selected an extension that was not offered")
    selected = header("sec-websocket-protocol")
    if selected is not None and selected not in offered:
        raise ProtocolError(f"the server selected subprotocol {selected!r}, not offered")
    return selected
