"""The client side of the WebSocket opening handshake (RFC 6455 §4), bytes in and out.

Nothing here touches a socket: the engine writes what :meth:`UpgradeRequest.render`
returns and feeds what it reads to :func:`parse_response_head`.
"""

from __future__ import annotations

import binascii
import hashlib
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


def parse_response_head(data: bytes | bytearray) -> tuple[UpgradeResponse, int] | None:
    """Parse the answer head once complete; return it with its length, or None for more.

    Raise :class:`ProtocolError` for anything RFC 9112 §4 and §5 do not allow.
    """
    check_response_prefix(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise ProtocolError(f"the upgrade answer head exceeds {MAX_HEAD_BYTES} bytes")
        return None
    if end > MAX_HEAD_BYTES:
        raise ProtocolError(f"the upgrade answer head exceeds {MAX_HEAD_BYTES} bytes")
    try:
        text = bytes(data[:end]).decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise ProtocolError("the upgrade answer head is not text") from exc
    status_line, *lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0"):
        raise ProtocolError(f"malformed status line {status_line[:80]!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"malformed status code in {status_line[:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise ProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    reason = parts[2] if len(parts) == 3 else ""
    return UpgradeResponse(int(code), reason, tuple(headers)), end + 4


def check_upgrade(response: UpgradeResponse, key: bytes, offered: Sequence[str]) -> str | None:
    """Check a 101 answer against RFC 6455 §4.1; return the selected subprotocol.

    The caller handles a status other than 101 first (outcome ``http_status``).
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
    if header("sec-websocket-extensions"):
        # §4.1: the client offered no extension, so the server may not select one.
        raise ProtocolError("the server selected an extension that was not offered")
    selected = header("sec-websocket-protocol")
    if selected is not None and selected not in offered:
        raise ProtocolError(f"the server selected subprotocol {selected!r}, not offered")
    return selected
