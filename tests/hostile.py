"""Misbehaving WebSocket servers for integration tests, each broken in one way.

Every server is raw asyncio (``asyncio.start_server`` on 127.0.0.1, port 0), so that
it can send exactly the bytes its name promises, which no real WebSocket library would.
Use one as an async context manager::

    async with bad_accept_server() as server:
        attempt = await engine.connect(server.url)   # ws://127.0.0.1:PORT/ws
        assert server.accepted == 1

The helpers below it (:func:`read_request_head`, :func:`accept_value`,
:func:`encode_frame`, :func:`read_frame`) are the few pieces of RFC 6455 they need.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType
from typing import Literal, Self

#: RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: A request head larger than this is not an upgrade request.
MAX_HEAD_BYTES = 64 * 1024

#: Client frames larger than this are refused by :func:`read_frame` (the tests send small ones).
MAX_FRAME_BYTES = 16 * 1024 * 1024


class Opcode(IntEnum):
    """Frame opcodes of RFC 6455 §5.2."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


@dataclass(frozen=True)
class RequestHead:
    """The head of one HTTP request: request line and headers (names lowercased)."""

    method: str
    target: str
    headers: dict[str, str]
    raw: bytes

    def header(self, name: str) -> str | None:
        """Return a header's value (repeated headers joined by ', '), or None."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Frame:
    """One frame as read off the wire, payload unmasked."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    masked: bool


async def read_request_head(reader: asyncio.StreamReader) -> RequestHead:
    """Read one request head, up to and including the blank line (RFC 9112 §2.1)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > MAX_HEAD_BYTES:
        raise ValueError("request head too large")
    request_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return RequestHead(method=method, target=target, headers=headers, raw=raw)


def accept_value(key: str) -> str:
    """Return the Sec-WebSocket-Accept that answers ``key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(key.encode() + GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def http_response(status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """Encode a complete HTTP/1.1 response; Content-Length is added unless given."""
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    fields = list(headers)
    if not any(name.lower() == "content-length" for name, _ in fields):
        fields.append(("Content-Length", str(len(body))))
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields)
    return head.encode("latin-1") + b"\r\n" + body


def switching_protocols(key: str, accept: str | None = None) -> bytes:
    """Encode a 101 answer to an upgrade with ``key``; ``accept`` overrides the right value."""
    return http_response(
        101,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_value(key) if accept is None else accept),
        ],
    ).replace(b"Content-Length: 0\r\n", b"")


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    declared_length: int | None = None,
) -> bytes:
    """Encode one frame (RFC 6455 §5.2), as a server would unless ``mask`` is given.

    ``rsv`` sets the three RSV bits (0-7); ``declared_length`` puts a length in the
    header that need not match the payload that follows.
    """
    length = len(payload) if declared_length is None else declared_length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF])
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length <= 0xFFFF:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return head + payload
    return head + mask + _apply_mask(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    """Encode a close frame's body: the status code, then a UTF-8 reason (§5.5.1)."""
    return struct.pack("!H", code) + reason.encode()


def _apply_mask(data: bytes, mask: bytes) -> bytes:
    # XOR with the repeated 4-byte key, as one big integer: fast enough for test payloads.
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big"
    )


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame and unmask its payload; raise IncompleteReadError at EOF."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if length > MAX_FRAME_BYTES:
        raise ValueError(f"client frame of {length} bytes is too large for a test server")
    masked = bool(second & 0x80)
    mask = await reader.readexactly(4) if masked else b""
    payload = await reader.readexactly(length)
    return Frame(
        fin=bool(first & 0x80),
        rsv=first >> 4 & 0x7,
        opcode=first & 0xF,
        payload=_apply_mask(payload, mask) if masked else payload,
        masked=masked,
    )


class HostileConnection:
    """One accepted connection, with the moves the servers below are made of."""

    def __init__(
        self, server: HostileServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> RequestHead:
        """Read the request head and record it in ``server.requests``."""
        head = await read_request_head(self.reader)
        self.server.requests.append(head)
        return head

    async def send(self, data: bytes) -> None:
        """Write ``data`` and wait until the transport has taken it."""
        self.writer.write(data)
        await self.writer.drain()

    async def accept_upgrade(self) -> RequestHead:
        """Read the upgrade request and answer it with a correct 101."""
        head = await self.read_request()
        await self.send(switching_protocols(head.header("sec-websocket-key") or ""))
        return head

    async def discard_until_eof(self) -> None:
        """Read and drop everything until the peer closes."""
        while await self.reader.read(65536):
            pass

    async def serve_frames(self, *, echo: bool) -> None:
        """Answer pings and close; echo data frames (opcode and FIN kept) if ``echo``."""
        while True:
            frame = await read_frame(self.reader)
            if frame.opcode == Opcode.CLOSE:
                # RFC 6455 §5.5.1: echo the status code; §7.1.1: the server closes TCP first.
                await self.send(encode_frame(Opcode.CLOSE, frame.payload[:2]))
                return
            if frame.opcode == Opcode.PING:
                await self.send(encode_frame(Opcode.PONG, frame.payload))
            elif echo and frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION):
                await self.send(encode_frame(frame.opcode, frame.payload, fin=frame.fin))

    def reset(self) -> None:
        """Close with a TCP RST rather than a FIN (SO_LINGER with a zero timeout)."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[HostileConnection], Awaitable[None]]


@dataclass(eq=False)
class HostileServer:
    """A raw asyncio server on 127.0.0.1 that runs ``handler`` for each connection."""

    handler: Handler
    port: int = 0
    #: Connections accepted so far.
    accepted: int = 0
    #: Request heads read so far, in order.
    requests: list[RequestHead] = field(default_factory=list)
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _connections: dict[asyncio.Task[None], HostileConnection] = field(
        default_factory=dict, init=False, repr=False
    )
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def url(self) -> str:
        """Return ``ws://127.0.0.1:PORT/ws``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def open(self) -> int:
        """Return how many connections are open now."""
        return len(self._connections)

    async def wait_for(self, predicate: Callable[[HostileServer], bool]) -> None:
        """Wait until ``predicate(self)`` holds; re-checked on every accept and close."""
        while True:
            changed = self._changed
            if predicate(self):
                return
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = HostileConnection(self, reader, writer)
        self.accepted += 1
        self._notify()
        try:
            await self.handler(self._connections[task])
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
        ):
            pass  # the peer went away or sent nonsense: either way this connection is over
        finally:
            writer.close()
            del self._connections[task]
            self._notify()

    def close_all(self) -> int:
        """Close every open connection's TCP now (a FIN); return how many."""
        for connection in self._connections.values():
            connection.writer.close()
        return len(self._connections)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            self._connections[task].writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()


def unused_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def silent_server() -> HostileServer:
    """Accept, then never answer: read and drop whatever comes."""
    return HostileServer(HostileConnection.discard_until_eof)


def status_server(
    status: int, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> HostileServer:
    """Answer the upgrade with HTTP ``status`` (401, 503, ...), then close."""
    answer = http_response(status, [*headers, ("Connection", "close")], body)

    async def handle(connection: HostileConnection) -> None:
        await connection.read_request()
        await connection.send(answer)

    return HostileServer(handle)


def garbage_server(data: bytes = b"SSH-2.0-OpenSSH_9.6\r\n") -> HostileServer:
    """Answer the upgrade with bytes that are not HTTP, then close."""

    async def handle(connection: HostileConnection) -> None:
        await connection.read_request()
        await connection.send(data)

    return HostileServer(handle)


def wrong_accept_for(key: str) -> str:
    """Return the well-formed but wrong Sec-WebSocket-Accept that bad_accept_server sends."""
    return accept_value("not-" + key)


def bad_accept_server() -> HostileServer:
    """Answer 101 with a well-formed but wrong Sec-WebSocket-Accept, then stay open."""

    async def handle(connection: HostileConnection) -> None:
        head = await connection.read_request()
        key = head.header("sec-websocket-key") or ""
        await connection.send(switching_protocols(key, accept=wrong_accept_for(key)))
        await connection.serve_frames(echo=False)

    return HostileServer(handle)


def close_after_upgrade_server(mode: Literal["frame", "eof", "reset"]) -> HostileServer:
    """Answer 101 correctly, then at once: a close frame (1001), a TCP FIN, or a TCP RST."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        if mode == "frame":
            await connection.send(encode_frame(Opcode.CLOSE, close_payload(1001, "going away")))
            # Wait for the client's close frame (or EOF), then close TCP (RFC 6455 §7.1.1).
            await connection.serve_frames(echo=False)
        elif mode == "reset":
            connection.reset()

    return HostileServer(handle)


def welcome_server(welcome: bytes | str, delay: float = 0, then_echo: bool = True) -> HostileServer:
    """Answer 101, send ``welcome`` after ``delay`` (text if str), then echo data frames.

    Pings get pongs and a close frame gets a close frame whether or not it echoes.
    """
    if isinstance(welcome, str):
        frame = encode_frame(Opcode.TEXT, welcome.encode())
    else:
        frame = encode_frame(Opcode.BINARY, welcome)

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        if delay > 0:
            await asyncio.sleep(delay)  # the stall is the hostility under test
        await connection.send(frame)
        await connection.serve_frames(echo=then_echo)

    return HostileServer(handle)


def oversized_frame_server(declared_length: int) -> HostileServer:
    """Answer 101, then a binary frame header declaring ``declared_length`` and 3 bytes."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(encode_frame(Opcode.BINARY, b"abc", declared_length=declared_length))
        await connection.discard_until_eof()

    return HostileServer(handle)


#: What invalid_utf8_server sends as text: never valid UTF-8 (RFC 3629 §1).
INVALID_UTF8 = b"\xff\xfe"


def invalid_utf8_server() -> HostileServer:
    """Answer 101, then a text frame whose payload is not UTF-8 (RFC 6455 §8.1)."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(encode_frame(Opcode.TEXT, INVALID_UTF8))
        await connection.serve_frames(echo=False)

    return HostileServer(handle)


def masked_frame_server() -> HostileServer:
    """Answer 101, then a masked text frame, which a server must never send (§5.1)."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(encode_frame(Opcode.TEXT, b"hello", mask=os.urandom(4)))
        await connection.serve_frames(echo=False)

    return HostileServer(handle)


def dribble_server(delay_per_byte: float) -> HostileServer:
    """Send a correct 101 one byte at a time, ``delay_per_byte`` apart, then echo."""

    async def handle(connection: HostileConnection) -> None:
        head = await connection.read_request()
        answer = switching_protocols(head.header("sec-websocket-key") or "")
        for index in range(len(answer)):
            await connection.send(answer[index : index + 1])
            await asyncio.sleep(delay_per_byte)  # the dribble is the hostility under test
        await connection.serve_frames(echo=True)

    return HostileServer(handle)


@dataclass(eq=False)
class EchoServer(HostileServer):
    """A correct echo server (no welcome) that can drop every open connection."""

    drop_after: float | None = None
    #: Connections closed by :meth:`drop_all` so far.
    dropped: int = 0
    _timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)

    def drop_all(self) -> int:
        """Close every open connection's TCP now, without a close frame; return how many."""
        count = self.close_all()
        self.dropped += count
        return count

    def trigger(self) -> None:
        """Arm the drop: every connection open ``drop_after`` seconds from now is closed.

        The first accepted connection arms it too; arming again has no effect.
        """
        if self.drop_after is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.drop_after, self.drop_all)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await super().__aexit__(exc_type, exc, tb)


def echo_server(drop_after: float | None = None) -> EchoServer:
    """Answer 101 and echo; with ``drop_after``, drop every open connection that long
    after the trigger (the first accepted connection, or :meth:`EchoServer.trigger`).
    """

    async def handle(connection: HostileConnection) -> None:
        server.trigger()
        await connection.accept_upgrade()
        await connection.serve_frames(echo=True)

    server = EchoServer(handle, drop_after=drop_after)
    return server
