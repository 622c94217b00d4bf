"""The Python clients the benchmark compares, and one measurement of one of them.

Every client does the same full cycle per connection against the same target: TCP
connect, HTTP upgrade, wait for the welcome, send one echo and wait for it, close.

Two measurements, each in a fresh process (``bench/run.py`` starts one per sample):

- ``burst``: N such cycles with at most ``concurrency`` in flight at once; the CPU of this
  process (``getrusage``) and the wall time of the burst only (imports, the loop's
  creation and the client's set-up come before), and the event-loop lag meanwhile (a
  timer every :data:`LAG_INTERVAL`, how late it fires);
- ``hold``: N connections opened (upgrade, welcome, echo) and held open at once; the
  process's RSS once they are all open.

``python bench/clients.py {burst,hold} CLIENT PORT CONNECTIONS CONCURRENCY [--loop L]``
prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

#: What every client checks of the target's messages (bench/target.js).
WELCOME_MATCH = r'"type":\s*"welcome"'
ECHO_PAYLOAD = '{"type":"ping","seq":1}'
ECHO_MATCH = "ping"
#: One connection's whole cycle (or opening, when held) must finish within this.
CYCLE_TIMEOUT = 10.0
#: How often the lag ticker fires during a burst (seconds).
LAG_INTERVAL = 0.005
#: The event loops a client can run on.
LOOPS = ("asyncio", "uvloop")
MODES = ("burst", "hold")
#: What a held measurement keeps alive until the process exits.
_KEPT: list[object] = []


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
Hold = Callable[[int], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Client:
    """One client: a full cycle, an opening that holds the connection, and its clean-up."""

    cycle: Cycle
    hold: Hold
    done: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


async def _pool(job: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> None:
    """Run ``job(i)`` for i in range(n), at most ``concurrency`` at once (a fixed pool)."""
    next_i = iter(range(n))

    async def worker() -> None:
        for i in next_i:
            await job(i)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, n)):
            group.create_task(worker())


async def _burst(cycle: Cycle, connections: int, concurrency: int, tally: Tally) -> None:
    """Run ``connections`` cycles, at most ``concurrency`` at once."""

    async def one(conn: int) -> None:
        try:
            async with asyncio.timeout(CYCLE_TIMEOUT):
                await cycle(conn)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, with its reason
            tally.fail(f"{type(exc).__name__}: {exc}")
        else:
            tally.ok += 1

    await _pool(one, connections, concurrency)


async def _hold_all(hold: Hold, connections: int, concurrency: int, tally: Tally) -> list[object]:
    """Open ``connections`` and keep them; return what holds them open."""
    held: list[object] = []

    async def one(conn: int) -> None:
        try:
            async with asyncio.timeout(CYCLE_TIMEOUT):
                held.append(await hold(conn))
        except Exception as exc:  # noqa: BLE001 - every failure is counted, with its reason
            tally.fail(f"{type(exc).__name__}: {exc}")
        else:
            tally.ok += 1

    await _pool(one, connections, concurrency)
    return held


class LagTicker:
    """A timer every ``interval``; how late each one fires is the event loop's lag."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lags: list[float] = []
        self._loop = asyncio.get_running_loop()
        self._expected = self._loop.time() + interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        now = self._loop.time()
        self.lags.append(max(0.0, now - self._expected))
        self._expected = now + self.interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def stop(self) -> dict[str, float | int | None]:
        """Stop; return the samples' count, p99 and max (seconds)."""
        self._handle.cancel()
        lags = sorted(self.lags)
        p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else None
        return {"samples": len(lags), "p99": p99, "max": lags[-1] if lags else None}


# -- spikewatch's engine ----------------------------------------------------------------


#: A conversation of three round trips (issue 13), for its cost beside the welcome and echo:
#: the welcome by JSON, an echo whose answer's conn is captured, and an echo that sends the
#: capture and matches it back.
THREE_STEPS = [
    {"name": "welcome", "expect": {"json": {"type": "welcome"}}, "timeout": CYCLE_TIMEOUT},
    {"name": "ping", "send": {"text": '{"type":"ping","seq":{seq},"conn":{conn}}'}},
    {
        "name": "pong",
        "expect": {"match": '"seq":{seq},"conn":(?P<c>\\d+)'},
        "timeout": CYCLE_TIMEOUT,
    },
    {"name": "again", "send": {"text": '{"type":"again","of":"{c}"}'}},
    {"name": "again-echo", "expect": {"match": '"of":"{c}"'}, "timeout": CYCLE_TIMEOUT},
]


def spikewatch_target(url: str, *, echo: bool = True, conversation: bool = False) -> Any:
    """Return the TargetConfig the daemon would build for the bench target."""
    from spikewatch.config import parse_config  # noqa: PLC0415 - import only what is measured

    target: dict[str, Any] = {
        "name": "bench",
        "url": url,
        "handshake_timeout": CYCLE_TIMEOUT,
        "close_timeout": CYCLE_TIMEOUT,
    }
    if conversation:
        target["conversation"] = THREE_STEPS
    else:
        target["welcome"] = {"match": WELCOME_MATCH, "timeout": CYCLE_TIMEOUT}
    if echo and not conversation:
        target["echo"] = {"payload": ECHO_PAYLOAD, "match": ECHO_MATCH, "timeout": CYCLE_TIMEOUT}
    config = {"targets": [target], "scenarios": [{"name": "bench", "spike": {"connections": 1}}]}
    return parse_config(config).targets[0]


def _spikewatch(url: str, *, conversation: bool = False) -> Client:
    from spikewatch.core.attempt import Attempt  # noqa: PLC0415 - import only what is measured
    from spikewatch.core.outcomes import Outcome, Phase  # noqa: PLC0415
    from spikewatch.engine.connection import open_connection  # noqa: PLC0415
    from spikewatch.engine.registry import ConnectionRegistry  # noqa: PLC0415
    from spikewatch.engine.spec import build_connection_spec  # noqa: PLC0415

    # The spec the daemon builds for such a target, through the same validated path.
    target = spikewatch_target(url, conversation=conversation)
    spec = build_connection_spec(target, target.host)
    registry = ConnectionRegistry(limit=1 << 30)

    async def cycle(conn: int) -> None:
        attempt = Attempt(Phase.SPIKE, conn)
        connection = await open_connection(spec, attempt, registry)
        if attempt.outcome != Outcome.OK:
            raise RuntimeError(f"{attempt.outcome}: {attempt.detail}")
        assert connection is not None
        await connection.wait_closed()  # the close is part of the cycle

    async def hold(conn: int) -> object:
        # As the runner holds a spike connection: keep_open, the attempt kept beside it.
        attempt = Attempt(Phase.SPIKE, conn)
        connection = await open_connection(spec, attempt, registry, keep_open=True)
        if attempt.outcome != Outcome.OK:
            raise RuntimeError(f"{attempt.outcome}: {attempt.detail}")
        return (connection, attempt)

    return Client(cycle, hold, _nothing)


# -- aiohttp's ws_connect ---------------------------------------------------------------


def _aiohttp(url: str) -> Client:
    import aiohttp  # noqa: PLC0415 - import only the client measured

    welcome = re.compile(WELCOME_MATCH)
    session: aiohttp.ClientSession | None = None

    def get_session() -> aiohttp.ClientSession:
        nonlocal session
        if session is None:
            # Our workers cap concurrency; the connector must not add its own queue.
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return session

    async def exchange(ws: aiohttp.ClientWebSocketResponse) -> None:
        if not welcome.search(await ws.receive_str()):
            raise RuntimeError("welcome did not match")
        await ws.send_str(ECHO_PAYLOAD)
        if ECHO_MATCH not in await ws.receive_str():
            raise RuntimeError("echo did not match")

    async def cycle(conn: int) -> None:
        async with get_session().ws_connect(url, compress=0, autoping=False) as ws:
            await exchange(ws)

    async def hold(conn: int) -> object:
        ws = await get_session().ws_connect(url, compress=0, autoping=False)
        await exchange(ws)
        return ws

    async def done() -> None:
        if session is not None:
            await session.close()

    return Client(cycle, hold, done)


# -- the websockets asyncio client ------------------------------------------------------


def _websockets(url: str) -> Client:
    from websockets.asyncio.client import ClientConnection, connect  # noqa: PLC0415

    welcome = re.compile(WELCOME_MATCH)

    async def exchange(ws: ClientConnection) -> None:
        message = await ws.recv(decode=True)
        assert isinstance(message, str)
        if not welcome.search(message):
            raise RuntimeError("welcome did not match")
        await ws.send(ECHO_PAYLOAD)
        message = await ws.recv(decode=True)
        assert isinstance(message, str)
        if ECHO_MATCH not in message:
            raise RuntimeError("echo did not match")

    async def cycle(conn: int) -> None:
        async with connect(url, compression=None, ping_interval=None) as ws:
            await exchange(ws)

    async def hold(conn: int) -> object:
        ws = await connect(url, compression=None, ping_interval=None)
        await exchange(ws)
        return ws

    return Client(cycle, hold, _nothing)


# -- the floor: a minimal hand-written client -------------------------------------------

_MASK = b"\x37\xfa\x21\x3d"


def _masked(opcode: int, payload: bytes) -> bytes:
    """Return one final, masked client frame (RFC 6455 §5.2, §5.3); payloads < 126 bytes."""
    assert len(payload) < 126
    masked = bytes(b ^ _MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + _MASK + masked


class _FloorProtocol(asyncio.Protocol):
    """Least work a correct-enough client can do: fixed request, fixed frames, no checks
    beyond the status line and the two messages' content.

    ``done`` resolves when the cycle is over: after the close (``hold=False``), or as
    soon as the echo came back (``hold=True``: the connection stays open).
    """

    __slots__ = ("_buffer", "_hold", "_messages", "_request", "_transport", "_upgraded", "done")

    ECHO_FRAME = _masked(0x1, ECHO_PAYLOAD.encode())
    CLOSE_FRAME = _masked(0x8, (1000).to_bytes(2, "big"))

    def __init__(self, request: bytes, done: asyncio.Future[None], *, hold: bool) -> None:
        self._request = request
        self.done = done
        self._hold = hold
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._upgraded = False
        self._messages = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they have its methods.
        self._transport = cast("asyncio.Transport", transport)
        self._transport.write(self._request)

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
                if self._hold:
                    self.done.set_result(None)
                else:
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


def _floor(url: str) -> Client:
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

    async def run(*, hold: bool) -> asyncio.Transport:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda: _FloorProtocol(request, done, hold=hold), host, port
        )
        try:
            await done
        except BaseException:
            transport.abort()
            raise
        return transport

    async def cycle(conn: int) -> None:
        transport = await run(hold=False)
        transport.abort()  # closed already; a no-op unless the target did not close

    async def hold(conn: int) -> object:
        return await run(hold=True)

    return Client(cycle, hold, _nothing)


#: The Python clients, by the name the table and the JSON use; the floor first.
CLIENTS: dict[str, Callable[[str], Client]] = {
    "floor": _floor,
    "spikewatch": _spikewatch,
    "spikewatch-3step": functools.partial(_spikewatch, conversation=True),
    "websockets": _websockets,
    "aiohttp": _aiohttp,
}


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """Return a new event loop of ``kind``: the standard library's or uvloop's."""
    if kind == "uvloop":
        import uvloop  # noqa: PLC0415 - only when asked for

        return uvloop.new_event_loop()
    if kind != "asyncio":
        raise ValueError(f"unknown loop {kind!r}; expected one of {LOOPS}")
    return asyncio.new_event_loop()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Return this process's resident set size now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_burst(
    client: str, port: int, connections: int, concurrency: int, loop_kind: str
) -> dict[str, object]:
    """Run one burst of ``client`` against 127.0.0.1:``port`` and return its figures."""
    url = f"ws://127.0.0.1:{port}/"
    chosen = CLIENTS[client](url)
    tally = Tally()
    loop = new_loop(loop_kind)
    lag: dict[str, float | int | None] = {}

    async def measured() -> None:
        ticker = LagTicker(LAG_INTERVAL)
        try:
            await _burst(chosen.cycle, connections, concurrency, tally)
        finally:
            lag.update(ticker.stop())

    try:
        cpu_before, wall_before = _cpu_seconds(), time.perf_counter()
        loop.run_until_complete(measured())
        wall, cpu = time.perf_counter() - wall_before, _cpu_seconds() - cpu_before
        loop.run_until_complete(chosen.done())
    finally:
        loop.close()
    return {
        "mode": "burst",
        "client": client,
        "loop": loop_kind,
        "connections": connections,
        "concurrency": concurrency,
        "ok": tally.ok,
        "failed": tally.failed,
        "failures": tally.examples,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "loop_lag_seconds": lag,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def measure_hold(
    client: str, port: int, connections: int, concurrency: int, loop_kind: str
) -> dict[str, object]:
    """Open ``connections`` of ``client`` and hold them; return the RSS once all are open.

    The process exits right after (``os._exit`` in :func:`main`): the kernel closes the
    held sockets, so the clean-up of N connections is neither measured nor waited for.
    """
    url = f"ws://127.0.0.1:{port}/"
    chosen = CLIENTS[client](url)
    tally = Tally()
    loop = new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    held = loop.run_until_complete(_hold_all(chosen.hold, connections, concurrency, tally))
    opened_in = time.perf_counter() - started
    # Let the last writes and reads settle, then count what stays resident for the held
    # connections, not garbage waiting for a collection.
    loop.run_until_complete(asyncio.sleep(0.2))
    gc.collect()
    rss_held = rss_bytes()
    _KEPT.extend((chosen, held, loop))
    return {
        "mode": "hold",
        "client": client,
        "loop": loop_kind,
        "connections": connections,
        "concurrency": concurrency,
        "ok": tally.ok,
        "failed": tally.failed,
        "failures": tally.examples,
        "held": len(held),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "rss_before_bytes": rss_before,
        "rss_held_bytes": rss_held,
        "open_seconds": opened_in,
    }


def stop_process(process: subprocess.Popen[str], grace: float = 5.0) -> int:
    """Terminate a helper process (a target), kill it after ``grace`` seconds; its status."""
    process.terminate()
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(argv: list[str]) -> int:
    """Print one measurement's figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("client", choices=list(CLIENTS))
    parser.add_argument("port", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    limit = raise_fd_limit()
    if args.connections + 64 > limit:
        print(
            f"clients.py: {args.connections} connections need more than {limit} fds",
            file=sys.stderr,
        )
        return 2
    measure = measure_burst if args.mode == "burst" else measure_hold
    figures = measure(args.client, args.port, args.connections, args.concurrency, args.loop)
    print(json.dumps(figures), flush=True)
    if args.mode == "hold":
        os._exit(0)  # the kernel closes the held connections; see measure_hold
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
