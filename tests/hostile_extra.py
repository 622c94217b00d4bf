"""More misbehaving servers: the slow and hostile targets of the hardening matrix.

Like :mod:`tests.hostile`, each is broken in exactly one way; :func:`deaf_server` is not a
:class:`~tests.hostile.HostileServer` because asyncio's streams would read for it.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from tests.hostile import (
    HostileConnection,
    HostileServer,
    Opcode,
    close_payload,
    encode_frame,
    read_frame,
)

#: How many pings :func:`ping_flood_server` writes before it yields to the loop.
PINGS_PER_BURST = 200


class DeafServer:
    """A listening socket that never accepts: the kernel completes the TCP handshake,
    queues the connection, and nothing ever reads from it or answers.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.port = 0

    @property
    def url(self) -> str:
        """Return ``ws://127.0.0.1:PORT/ws``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> Self:
        # A small receive buffer, so that a large request fills it and the client's too.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()


def deaf_server() -> DeafServer:
    """Accept TCP (in the kernel's backlog), never read, never answer."""
    return DeafServer()


@dataclass(eq=False)
class PingFloodServer(HostileServer):
    """Counts what the flood provoked: pings sent and pongs read back."""

    pings: int = 0
    pongs: int = 0


def ping_flood_server() -> PingFloodServer:
    """Answer 101, then send pings as fast as the socket takes them, reading the pongs;
    never a data frame, so a client waiting for a welcome waits in vain.
    """

    async def count_pongs(connection: HostileConnection) -> None:
        while True:
            frame = await read_frame(connection.reader)
            if frame.opcode == Opcode.PONG:
                server.pongs += 1

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        reader = asyncio.create_task(count_pongs(connection))
        burst = encode_frame(Opcode.PING, b"flood") * PINGS_PER_BURST
        try:
            while not reader.done():
                await connection.send(burst)
                server.pings += PINGS_PER_BURST
                await asyncio.sleep(0)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    server = PingFloodServer(handle)
    return server


def half_close_server() -> HostileServer:
    """Answer 101, then shut down its sending side (a FIN) and keep reading."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        connection.writer.write_eof()  # shutdown(SHUT_WR)
        await connection.discard_until_eof()

    return HostileServer(handle)


def endless_head_server() -> HostileServer:
    """Start a 101 answer, then send header lines forever, never the blank line."""

    async def handle(connection: HostileConnection) -> None:
        await connection.read_request()
        await connection.send(b"HTTP/1.1 101 Switching Protocols\r\n")
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        while True:
            await connection.send(line)

    return HostileServer(handle)


def fragment_flood_server(fragment_bytes: int) -> HostileServer:
    """Answer 101, then one text message in fragments of ``fragment_bytes``, never ending."""

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        payload = b"x" * fragment_bytes
        await connection.send(encode_frame(Opcode.TEXT, payload, fin=False))
        while True:
            await connection.send(encode_frame(Opcode.CONTINUATION, payload, fin=False))

    return HostileServer(handle)


def deaf_after_welcome_server(welcome: str) -> HostileServer:
    """Answer 101 and send ``welcome``, then never read again nor close: the client's
    close frame is never answered.
    """

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(encode_frame(Opcode.TEXT, welcome.encode()))
        await asyncio.Event().wait()

    return HostileServer(handle)


def idle_timeout_server(after: float) -> HostileServer:
    """Like a proxy with a read timeout: welcome and echo, then close any connection that
    is still open ``after`` seconds later (1001, "idle timeout"), as nginx did in issue 13."""
    return serve_then(after, encode_frame(Opcode.CLOSE, close_payload(1001, "idle timeout")))


def budget_buster_server(after: float) -> HostileServer:
    """Welcome and echo, then send any connection still open ``after`` seconds later a
    binary frame declaring 100,000 bytes and sending 60,000 of them: more than a small
    limits.max_receive_buffer_bytes, so that the prober's own budget closes it."""
    return serve_then(after, encode_frame(Opcode.BINARY, b"m" * 60_000, declared_length=100_000))


def serve_then(after: float, then: bytes) -> HostileServer:
    """Welcome and echo; to any connection still open ``after`` seconds later send
    ``then``, and read nothing more of it."""
    welcome = encode_frame(Opcode.TEXT, b'{"type":"welcome"}')

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(welcome)
        serving = asyncio.create_task(connection.serve_frames(echo=True))
        done, _ = await asyncio.wait({serving}, timeout=after)
        if not done:
            serving.cancel()
            await connection.send(then)
            await connection.discard_until_eof()

    return HostileServer(handle)


def pong_less_server() -> HostileServer:
    """Welcome and echo data frames, but never answer a ping (a server whose ping handling
    is broken, or behind a proxy that eats control frames); close frames get their answer."""
    welcome = encode_frame(Opcode.TEXT, b'{"type":"welcome"}')

    async def handle(connection: HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(welcome)
        while True:
            frame = await read_frame(connection.reader)
            if frame.opcode == Opcode.CLOSE:
                await connection.send(encode_frame(Opcode.CLOSE, frame.payload[:2]))
                return
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                await connection.send(encode_frame(frame.opcode, frame.payload))

    return HostileServer(handle)
