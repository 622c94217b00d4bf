"""Self-tests of tests/hostile.py: each server sends exactly the bytes its name says."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from tests.conftest import TIMER_GRAIN, scaled
from tests.hostile import (
    INVALID_UTF8,
    Frame,
    HostileServer,
    Opcode,
    accept_value,
    bad_accept_server,
    close_after_upgrade_server,
    close_payload,
    dribble_server,
    echo_server,
    encode_frame,
    garbage_server,
    http_response,
    invalid_utf8_server,
    masked_frame_server,
    oversized_frame_server,
    read_frame,
    read_request_head,
    silent_server,
    status_server,
    unused_port,
    welcome_server,
    wrong_accept_for,
)

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True


#: The sample key of RFC 6455 §1.3 and its answer.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
KEY_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def upgrade_request(port: int, key: str = KEY) -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "X-Repeated: a\r\nX-Repeated: b\r\n\r\n"
    ).encode()


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """Encode a frame masked, as a client must (RFC 6455 §5.3)."""
    return encode_frame(opcode, payload, mask=os.urandom(4))


@asynccontextmanager
async def client(
    server: HostileServer, *, upgrade: bool = True
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Open a raw TCP connection to ``server``, sending an upgrade request first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if upgrade:
        writer.write(upgrade_request(server.port))
    try:
        async with asyncio.timeout(scaled(5)):
            yield reader, writer
    finally:
        writer.close()


async def read_101(reader: asyncio.StreamReader) -> dict[str, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")[:-2]
    assert status == "HTTP/1.1 101 Switching Protocols"
    return {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}


async def test_accept_value_matches_rfc_example() -> None:
    """accept_value reproduces the worked example of RFC 6455 §1.3."""
    assert accept_value(KEY) == KEY_ACCEPT


async def test_unused_port_refuses() -> None:
    """Nothing listens on unused_port()."""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", unused_port())


async def test_silent_server_says_nothing() -> None:
    """silent_server reads the upgrade and never answers, even when the client finishes."""
    async with silent_server() as server, client(server) as (reader, writer):
        assert server.url == f"ws://127.0.0.1:{server.port}/ws"
        writer.write_eof()
        assert await reader.read() == b""
        assert server.accepted == 1
        assert server.requests == []


async def test_status_server_answers_the_status() -> None:
    """status_server answers with the status, its headers and body, then closes."""
    server = status_server(401, headers=[("WWW-Authenticate", "Bearer")], body=b"no")
    async with server, client(server) as (reader, _):
        answer = await reader.read()
    assert answer == (
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nConnection: close\r\n"
        b"Content-Length: 2\r\n\r\nno"
    )
    (request,) = server.requests
    assert request.method == "GET"
    assert request.target == "/ws"
    assert request.header("Sec-WebSocket-Key") == KEY
    assert request.header("x-repeated") == "a, b"
    assert request.header("missing") is None


async def test_status_server_unknown_status() -> None:
    """A status without a standard phrase gets the reason 'Unknown'."""
    async with status_server(599) as server, client(server) as (reader, _):
        assert (await reader.read()).startswith(b"HTTP/1.1 599 Unknown\r\n")


async def test_garbage_server_sends_the_bytes_and_closes() -> None:
    """garbage_server answers the upgrade with exactly its bytes, then EOF."""
    async with garbage_server() as server, client(server) as (reader, _):
        assert await reader.read() == b"SSH-2.0-OpenSSH_9.6\r\n"


async def test_bad_accept_server_sends_a_wrong_accept() -> None:
    """bad_accept_server's 101 carries a well-formed Sec-WebSocket-Accept for another key."""
    async with bad_accept_server() as server, client(server) as (reader, writer):
        headers = await read_101(reader)
        accept = headers["sec-websocket-accept"]
        assert accept != KEY_ACCEPT
        assert accept == wrong_accept_for(KEY)
        assert len(base64.b64decode(accept)) == 20
        writer.write(client_frame(Opcode.CLOSE, close_payload(1002)))
        assert await read_frame(reader) == Frame(True, 0, Opcode.CLOSE, close_payload(1002), False)


async def test_close_after_upgrade_frame() -> None:
    """Mode 'frame': a correct 101, a close frame with 1001, then EOF after the client's close."""
    server = close_after_upgrade_server("frame")
    async with server, client(server) as (reader, writer):
        assert (await read_101(reader))["sec-websocket-accept"] == KEY_ACCEPT
        frame = await read_frame(reader)
        assert frame.opcode == Opcode.CLOSE
        assert struct.unpack("!H", frame.payload[:2]) == (1001,)
        assert not frame.masked
        writer.write(client_frame(Opcode.CLOSE, close_payload(1001)))
        assert (await read_frame(reader)).opcode == Opcode.CLOSE
        assert await reader.read() == b""


async def test_close_after_upgrade_eof() -> None:
    """Mode 'eof': a correct 101, then a TCP FIN and nothing else."""
    server = close_after_upgrade_server("eof")
    async with server, client(server) as (reader, _):
        await read_101(reader)
        assert await reader.read() == b""


async def test_close_after_upgrade_reset() -> None:
    """Mode 'reset': a correct 101, then a TCP RST."""
    server = close_after_upgrade_server("reset")
    async with server, client(server) as (reader, _):
        await read_101(reader)
        with pytest.raises(ConnectionResetError):
            await reader.read()


async def test_welcome_server_welcomes_then_echoes() -> None:
    """welcome_server sends the text welcome, echoes unmasked, pongs pings, answers close."""
    async with welcome_server('{"type":"welcome"}') as server, client(server) as (reader, writer):
        await read_101(reader)
        assert await read_frame(reader) == Frame(True, 0, Opcode.TEXT, b'{"type":"welcome"}', False)
        writer.write(client_frame(Opcode.TEXT, b"ping 1"))
        assert await read_frame(reader) == Frame(True, 0, Opcode.TEXT, b"ping 1", False)
        writer.write(encode_frame(Opcode.BINARY, b"part", fin=False, mask=b"abcd"))
        writer.write(client_frame(Opcode.CONTINUATION, b"end"))
        assert await read_frame(reader) == Frame(False, 0, Opcode.BINARY, b"part", False)
        assert await read_frame(reader) == Frame(True, 0, Opcode.CONTINUATION, b"end", False)
        writer.write(client_frame(Opcode.PING, b"p"))
        assert await read_frame(reader) == Frame(True, 0, Opcode.PONG, b"p", False)
        writer.write(client_frame(Opcode.PONG, b"ignored"))
        writer.write(client_frame(Opcode.CLOSE, close_payload(1000, "bye")))
        assert await read_frame(reader) == Frame(True, 0, Opcode.CLOSE, close_payload(1000), False)
        assert await reader.read() == b""


async def test_welcome_server_binary_without_echo() -> None:
    """A bytes welcome is a binary frame; with then_echo off, data gets no answer."""
    server = welcome_server(b"\x01\x02", then_echo=False)
    async with server, client(server) as (reader, writer):
        await read_101(reader)
        assert await read_frame(reader) == Frame(True, 0, Opcode.BINARY, b"\x01\x02", False)
        writer.write(client_frame(Opcode.TEXT, b"no echo"))
        writer.write(client_frame(Opcode.PING))
        assert (await read_frame(reader)).opcode == Opcode.PONG


async def test_welcome_server_delay() -> None:
    """The welcome comes no sooner than delay after the 101."""
    async with welcome_server("hi", delay=0.1) as server, client(server) as (reader, _):
        await read_101(reader)
        began = time.monotonic()
        assert (await read_frame(reader)).payload == b"hi"
        assert time.monotonic() - began >= 0.1 - TIMER_GRAIN


async def test_oversized_frame_server_declares_more_than_it_sends() -> None:
    """The frame header declares 2**40 bytes and only 3 follow before the server stops."""
    server = oversized_frame_server(2**40)
    async with server, client(server) as (reader, writer):
        await read_101(reader)
        assert await reader.readexactly(2) == bytes([0x82, 127])
        assert struct.unpack("!Q", await reader.readexactly(8)) == (2**40,)
        writer.write_eof()
        assert await reader.read() == b"abc"


async def test_invalid_utf8_server() -> None:
    """The text frame's payload does not decode as UTF-8."""
    async with invalid_utf8_server() as server, client(server) as (reader, _):
        await read_101(reader)
        frame = await read_frame(reader)
        assert frame.opcode == Opcode.TEXT
        assert frame.payload == INVALID_UTF8
        with pytest.raises(UnicodeDecodeError):
            frame.payload.decode()


async def test_masked_frame_server() -> None:
    """The server's frame has the MASK bit set."""
    async with masked_frame_server() as server, client(server) as (reader, _):
        await read_101(reader)
        assert await read_frame(reader) == Frame(True, 0, Opcode.TEXT, b"hello", True)


async def test_dribble_server_sends_one_byte_at_a_time() -> None:
    """The 101 arrives in many small pieces, spread over the per-byte delay, then echoes."""
    async with dribble_server(0.002) as server, client(server) as (reader, writer):
        began = time.monotonic()
        pieces: list[bytes] = []
        while not b"".join(pieces).endswith(b"\r\n\r\n"):
            pieces.append(await reader.read(4096))
        answer = b"".join(pieces)
        assert len(pieces) > 10
        # uvloop's ms timers may wake each 2 ms sleep up to 1 ms early.
        assert time.monotonic() - began >= (0.002 - TIMER_GRAIN / 2) * (len(answer) - 1)
        assert f"Sec-WebSocket-Accept: {KEY_ACCEPT}".encode() in answer
        writer.write(client_frame(Opcode.TEXT, b"x"))
        assert (await read_frame(reader)).payload == b"x"


async def test_echo_server_echoes_and_drops_on_demand() -> None:
    """echo_server echoes without a welcome; drop_all closes every open connection's TCP."""
    async with echo_server() as server:
        async with client(server) as (r1, w1), client(server) as (r2, _):
            await read_101(r1)
            await read_101(r2)
            w1.write(client_frame(Opcode.TEXT, b"echo"))
            assert (await read_frame(r1)).payload == b"echo"
            assert server.open == 2
            assert server.drop_all() == 2
            assert await r1.read() == b""
            assert await r2.read() == b""
            await server.wait_for(lambda s: s.open == 0)
        assert server.accepted == 2
        assert server.dropped == 2


async def test_echo_server_drops_after_the_trigger() -> None:
    """With drop_after, connections open that long after the first one are dropped, once."""
    async with echo_server(drop_after=0.05) as server:
        async with client(server) as (reader, _):
            await read_101(reader)
            assert await reader.read() == b""
        async with client(server) as (reader, writer):
            await read_101(reader)
            writer.write(client_frame(Opcode.TEXT, b"later"))
            assert (await read_frame(reader)).payload == b"later"
        assert server.dropped == 1


async def test_trigger_without_drop_after_does_nothing() -> None:
    """trigger() on a server without drop_after arms nothing."""
    async with echo_server() as server:
        server.trigger()
        async with client(server) as (reader, writer):
            await read_101(reader)
            writer.write(client_frame(Opcode.TEXT, b"kept"))
            assert (await read_frame(reader)).payload == b"kept"
        assert server.dropped == 0


async def test_leaving_the_context_closes_open_connections() -> None:
    """Exiting a server's context closes its listener and every open connection."""
    async with welcome_server("hi") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(upgrade_request(server.port))
        await read_101(reader)
        await server.wait_for(lambda s: s.open == 1)
    async with asyncio.timeout(scaled(5)):
        remaining = await reader.read()
    assert remaining in (b"", encode_frame(Opcode.TEXT, b"hi"))
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_nonsense_from_the_client_ends_the_connection() -> None:
    """A request that is not HTTP ends that connection quietly."""
    async with welcome_server("hi") as server, client(server, upgrade=False) as (reader, writer):
        writer.write(b"\r\n\r\n")
        assert await reader.read() == b""


def test_encode_frame_bits_and_lengths() -> None:
    """encode_frame sets FIN, RSV bits, and uses 7-bit, 16-bit and 64-bit lengths."""
    assert encode_frame(Opcode.TEXT, b"hi") == b"\x81\x02hi"
    assert encode_frame(Opcode.TEXT, b"hi", fin=False, rsv=0b101) == b"\x51\x02hi"
    assert encode_frame(Opcode.BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert encode_frame(Opcode.BINARY, b"x" * 65536)[:10] == b"\x82\x7f" + struct.pack("!Q", 65536)
    assert encode_frame(Opcode.PING, declared_length=5) == b"\x89\x05"


async def test_read_frame_unmasks_and_limits() -> None:
    """read_frame unmasks a masked frame and refuses a frame beyond MAX_FRAME_BYTES."""
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(Opcode.TEXT, b"x" * 300, rsv=2, mask=b"\x01\x02\x03\x04"))
    reader.feed_data(encode_frame(Opcode.BINARY, declared_length=2**30))
    assert await read_frame(reader) == Frame(True, 2, Opcode.TEXT, b"x" * 300, True)
    with pytest.raises(ValueError, match="too large"):
        await read_frame(reader)


async def test_read_request_head_limit() -> None:
    """A request head beyond the size limit is refused."""
    reader = asyncio.StreamReader(limit=2**20)
    reader.feed_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
    with pytest.raises(ValueError, match="too large"):
        await read_request_head(reader)


def test_http_response_keeps_a_given_content_length() -> None:
    """A Content-Length passed in is not added twice."""
    answer = http_response(200, [("Content-Length", "5")], b"")
    assert answer.count(b"Content-Length") == 1
