"""The clients the benchmark compares, and one measured burst of one of them.

Every client does the same full cycle per connection against the same target: TCP
connect, HTTP upgrade, wait for the welcome, send one echo and wait for it, close. A burst
is N such cycles with at most ``concurrency`` in flight at once.

Run as ``python bench/clients.py CLIENT PORT CONNECTIONS CONCURRENCY``: it imports the
client, makes the event loop, then measures only the burst (CPU of this process from
``getrusage``, and wall time) and prints one JSON line. ``bench/run.py`` runs it once per
measurement, each in a fresh process, so imports and start-up never mix into a burst.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: What every client checks of the target's messages (bench/target.js).
WELCOME_MATCH = r'"type":\s*"welcome"'
ECHO_PAYLOAD = '{"type":"ping","seq":1}'
ECHO_MATCH = "ping"
#: One connection's whole cycle must finish within this; a burst never hangs.
CYCLE_TIMEOUT = 10.0


@dataclass(slots=True)
class Tally:
    """How many cycles of a burst succeeded, and one example of a failure."""

    ok: int = 0
    failed: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        """Count a failed cycle, keeping the first few reasons."""
        self.failed += 1
        if len(self.examples) < 3:
            self.examples.append(what)


Cycle = Callable[[int], Awaitable[None]]


async def _burst(cycle: Cycle, connections: int, concurrency: int, tally: Tally) -> None:
    """Run ``connections`` cycles, at most ``concurrency`` at once (a fixed pool of workers)."""
    next_conn = iter(range(connections))

    async def worker() -> None:
        for conn in next_conn:
            try:
                async with asyncio.timeout(CYCLE_TIMEOUT):
                    await cycle(conn)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, with its reason
                tally.fail(f"{type(exc).__name__}: {exc}")
            else:
                tally.ok += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, connections)):
            group.create_task(worker())


# -- spikewatch's engine ----------------------------------------------------------------


def _spikewatch(url: str) -> tuple[Cycle, Callable[[], Awaitable[None]]]:
    from spikewatch.config import parse_config  # noqa: PLC0415
    from spikewatch.core.attempt import Attempt  # noqa: PLC0415 - import only the client measured
    from spikewatch.core.outcomes import Outcome, Phase  # noqa: PLC0415
    from spikewatch.engine.connection import open_connection  # noqa: PLC0415
    from spikewatch.engine.registry import ConnectionRegistry  # noqa: PLC0415
    from spikewatch.engine.spec import build_connection_spec  # noqa: PLC0415

    # The spec the daemon builds for such a target, through the same validated path.
    target = parse_config(
        {
            "targets": [
                {
                    "name": "bench",
                    "url": url,
                    "handshake_timeout": CYCLE_TIMEOUT,
                    "close_timeout": CYCLE_TIMEOUT,
                    "welcome": {"match": WELCOME_MATCH, "timeout": CYCLE_TIMEOUT},
                    "echo": {
                        "payload": ECHO_PAYLOAD,
                        "match": ECHO_MATCH,
                        "timeout": CYCLE_TIMEOUT,
                    },
                }
            ],
            "scenarios": [{"name": "bench", "spike": {"connections": 1}}],
        }
    ).targets[0]
    spec = build_connection_spec(target, target.host)
    registry = ConnectionRegistry(limit=1 << 30)

    async def cycle(conn: int) -> None:
        attempt = Attempt(Phase.SPIKE, conn)
        connection = await open_connection(spec, attempt, registry)
        if attempt.outcome != Outcome.OK:
            raise RuntimeError(f"{attempt.outcome}: {attempt.detail}")
        assert connection is not None
        await connection.wait_closed()  # the close is part of the cycle

    async def done() -> None:
        return None

    return cycle, done


# -- aiohttp's ws_connect ---------------------------------------------------------------


def _aiohttp(url: str) -> tuple[Cycle, Callable[[], Awaitable[None]]]:
    import aiohttp  # noqa: PLC0415 - import only the client measured

    welcome = re.compile(WELCOME_MATCH)
    session: aiohttp.ClientSession | None = None

    async def cycle(conn: int) -> None:
        nonlocal session
        if session is None:
            # Our workers cap concurrency; the connector must not add its own queue.
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with session.ws_connect(url, compress=0, autoping=False) as ws:
            if not welcome.search(await ws.receive_str()):
                raise RuntimeError("welcome did not match")
            await ws.send_str(ECHO_PAYLOAD)
            if ECHO_MATCH not in await ws.receive_str():
                raise RuntimeError("echo did not match")

    async def done() -> None:
        if session is not None:
            await session.close()

    return cycle, done


# -- the websockets asyncio client ------------------------------------------------------


def _websockets(url: str) -> tuple[Cycle, Callable[[], Awaitable[None]]]:
    from websockets.asyncio.client import connect  # noqa: PLC0415 - import only the client measured

    welcome = re.compile(WELCOME_MATCH)

    async def cycle(conn: int) -> None:
        async with connect(url, compression=None, ping_interval=None) as ws:
            message = await ws.recv(decode=True)
            assert isinstance(message, str)
            if not welcome.search(message):
                raise RuntimeError("welcome did not match")
            await ws.send(ECHO_PAYLOAD)
            message = await ws.recv(decode=True)
            assert isinstance(message, str)
            if ECHO_MATCH not in message:
                raise RuntimeError("echo did not match")

    async def done() -> None:
        return None

    return cycle, done


# -- the floor: a minimal hand-written client -------------------------------------------

_MASK = b"\x37\xfa\x21\x3d"


def _masked(opcode: int, payload: bytes) -> bytes:
    """Return one final, masked client frame (RFC 6455 §5.2, §5.3); payloads < 126 bytes."""
    assert len(payload) < 126
    masked = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + _MASK + masked


class _FloorProtocol(asyncio.Protocol):
    """Least work a correct-enough client can do: fixed request, fixed frames, no checks
    beyond the status line and the two messages' content."""

    __slots__ = ("_buffer", "_messages", "_request", "_transport", "_upgraded", "done")

    ECHO_FRAME = _masked(0x1, ECHO_PAYLOAD.encode())
    CLOSE_FRAME = _masked(0x8, (1000).to_bytes(2, "big"))

    def __init__(self, request: bytes, done: asyncio.Future[None]) -> None:
        self._request = request
        self.done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._upgraded = False
        self._messages = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self._finish(RuntimeError(buffer[: buffer.find(b"\r\n")].decode("latin-1")))
                return
            self._upgraded = True
            buffer = buffer[end + 4 :]
        # Server frames are unmasked; the target's are small, but accept 16-bit lengths.
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            if len(buffer) < start + length:
                break
            payload, buffer = buffer[start : start + length], buffer[start + length :]
            self._on_frame(opcode, payload)
        self._buffer = buffer

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if opcode == 0x8:  # the target answered our close: the cycle is over
            transport.close()
        elif opcode == 0x1:
            self._messages += 1
            if self._messages == 1:
                if b'"welcome"' not in payload:
                    self._finish(RuntimeError("welcome did not match"))
                    return
                transport.write(self.ECHO_FRAME)
            elif self._messages == 2:
                if ECHO_MATCH.encode() not in payload:
                    self._finish(RuntimeError("echo did not match"))
                    return
                transport.write(self.CLOSE_FRAME)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._messages < 2:
            self._finish(exc or RuntimeError("closed before the echo"))
        elif not self.done.done():
            self.done.set_result(None)

    def _finish(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


def _floor(url: str) -> tuple[Cycle, Callable[[], Awaitable[None]]]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    host, port = parts.hostname, parts.port
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()

    async def cycle(conn: int) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _FloorProtocol(request, done), host, port
        )
        try:
            await done
        finally:
            transport.abort()  # only on failure or cancellation; closed already otherwise

    async def done() -> None:
        return None

    return cycle, done


#: The clients, by the name the table and the JSON use; the floor first.
CLIENTS: dict[str, Callable[[str], tuple[Cycle, Callable[[], Awaitable[None]]]]] = {
    "floor": _floor,
    "spikewatch": _spikewatch,
    "websockets": _websockets,
    "aiohttp": _aiohttp,
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(client: str, port: int, connections: int, concurrency: int) -> dict[str, object]:
    """Run one burst of ``client`` against 127.0.0.1:``port`` and return its figures."""
    url = f"ws://127.0.0.1:{port}/"
    cycle, done = CLIENTS[client](url)
    tally = Tally()
    loop = asyncio.new_event_loop()
    try:
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        loop.run_until_complete(_burst(cycle, connections, concurrency, tally))
        wall, cpu = time.perf_counter() - wall_before, _cpu_seconds() - cpu_before
        loop.run_until_complete(done())
    finally:
        loop.close()
    return {
        "client": client,
        "connections": connections,
        "concurrency": concurrency,
        "ok": tally.ok,
        "failed": tally.failed,
        "failures": tally.examples,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str]) -> int:
    """``clients.py CLIENT PORT CONNECTIONS CONCURRENCY``: print one burst's figures."""
    if len(argv) != 4 or argv[0] not in CLIENTS:
        print(
            f"usage: clients.py {{{','.join(CLIENTS)}}} PORT CONNECTIONS CONCURRENCY",
            file=sys.stderr,
        )
        return 2
    client, port, connections, concurrency = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    _raise_fd_limit()
    print(json.dumps(measure(client, port, connections, concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
