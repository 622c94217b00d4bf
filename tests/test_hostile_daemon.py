"""Hostile peers against the real daemon (issue 12): each attack as a loopback server, the
daemon as a process, and what must hold whatever the peer does.

Each test starts one attack server and one daemon (``spikewatch run``) whose only target
is that server. A first run, with the server healthy, warms the daemon up; the daemon is
sampled at rest (RSS, open fds, ``spikewatch_open_connections``); then a run is asked for
through the API, and the 50 spike connections of that run meet the attack (the baseline
and recovery probes before and after them get healthy answers, so that the spike is
reached and the run can recover). Asserted for every attack:

- the run is ``done`` in ``/api/v1/runs`` before its deadline (``RUN_DEADLINE``);
- RSS grows by less than ``MAX_RSS_GROWTH`` (16 MiB for the 50 hostile connections) from
  rest before the run to rest after it;
- open fds and ``spikewatch_open_connections`` come back to their values at rest;
- ``/metrics``, scraped every 100 ms from a thread throughout, answers each time within 1 s;
- no configured secret (API token, JWT secret, header value) nor a JWT the run minted is
  in the daemon's stdout or stderr, ``/metrics``, ``/api/v1/runs`` (list and detail),
  ``/api/v1/targets`` or the status page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests import hostile
from tests.builders import WELCOME, daemon_document, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess, metric_sum

pytestmark = pytest.mark.slow

#: The bound on RSS growth per attack (SPIKE hostile connections), from rest to rest: a
#: quarter of the issue's 64 MiB, far above the < 1 MiB measured, and below the 50 MiB
#: that 50 unfinished messages of ~1 MiB would keep if their buffers were not given back.
MAX_RSS_GROWTH = 16 * 2**20
#: Spike connections, every one of them meeting the attack.
SPIKE = 50
#: The run's deadline (the scenario's ``timeout``).
RUN_DEADLINE = 20.0
#: How long /metrics may take to answer, at most, while an attack runs.
METRICS_WITHIN = 1.0
#: The target's max_message_bytes, which the unfinished messages come close to.
MAX_MESSAGE_BYTES = 2**20
#: What one attacking connection sends at most, so that an attack on a daemon without its
#: budgets (the code before issue 12) stays bounded too.
FLOOD_BYTES = 4 * 2**20

API_TOKEN = "hostile-api-token-6f1d2c0a9b8e7d65"
JWT_SECRET = "hostile-jwt-secret-0b9a8c7d6e5f4a3b"
HEADER_SECRET = "hostile-header-value-5e4d3c2b1a09"

Handler = Callable[[hostile.HostileConnection], Awaitable[None]]


# --- the attacks --------------------------------------------------------------------------


async def healthy(connection: hostile.HostileConnection) -> None:
    """Answer 101, send the welcome, echo: what the baseline and recovery probes meet."""
    await connection.accept_upgrade()
    await connection.send(hostile.encode_frame(hostile.Opcode.TEXT, b'{"type": "welcome"}'))
    await connection.serve_frames(echo=True)


async def flood(connection: hostile.HostileConnection, chunk: bytes) -> None:
    """Send ``chunk`` as fast as the client takes it, up to FLOOD_BYTES; never read."""
    for _ in range(FLOOD_BYTES // len(chunk)):
        if connection.writer.is_closing():
            return
        await connection.send(chunk)
    await asyncio.Event().wait()  # flood over: hold the connection, reading nothing


async def ping_flood(connection: hostile.HostileConnection) -> None:
    """Pings as fast as the client takes them, never reading a pong."""
    await connection.accept_upgrade()
    await flood(connection, hostile.encode_frame(hostile.Opcode.PING, b"p" * 125) * 256)


async def empty_fragments(connection: hostile.HostileConnection) -> None:
    """A text message started, then continued by empty fragments, never finished."""
    await connection.accept_upgrade()
    await connection.send(hostile.encode_frame(hostile.Opcode.TEXT, b"", fin=False))
    empty = hostile.encode_frame(hostile.Opcode.CONTINUATION, b"", fin=False)
    await flood(connection, empty * 4096)


async def unfinished_message(connection: hostile.HostileConnection) -> None:
    """A binary frame declaring nearly max_message_bytes, all sent but its last byte."""
    await connection.accept_upgrade()
    declared = MAX_MESSAGE_BYTES - 1024
    body = b"m" * (declared - 1)
    await connection.send(
        hostile.encode_frame(hostile.Opcode.BINARY, body, declared_length=declared)
    )
    await connection.discard_until_eof()


async def never_reads(connection: hostile.HostileConnection) -> None:
    """Welcome, then never read a byte (echoes and the close frame go unanswered) and
    never close."""
    await connection.accept_upgrade()
    await connection.send(hostile.encode_frame(hostile.Opcode.TEXT, b'{"type": "welcome"}'))
    await asyncio.Event().wait()


async def close_then_junk(connection: hostile.HostileConnection) -> None:
    """A close frame and junk after it in one write, then the closing handshake."""
    await connection.accept_upgrade()
    close = hostile.encode_frame(hostile.Opcode.CLOSE, hostile.close_payload(1000, "bye"))
    await connection.send(close + b"\x81\x05junk!" + b"\xff" * 4096)
    await connection.serve_frames(echo=False)


@dataclass(eq=False)
class Switch:
    """Healthy answers, but the ``count`` connections after ``arm()`` (plus ``skip``
    healthy ones first: the baseline probes) meet ``attack``."""

    attack: Handler
    count: int = SPIKE
    skip: int = 2
    accepted: int = 0
    armed_at: int | None = None

    def arm(self) -> None:
        self.armed_at = self.accepted

    async def __call__(self, connection: hostile.HostileConnection) -> None:
        self.accepted += 1
        index = self.accepted
        if self.armed_at is not None and 0 < index - self.armed_at - self.skip <= self.count:
            await self.attack(connection)
        else:
            await healthy(connection)


# --- watching the daemon ------------------------------------------------------------------


class Watcher:
    """A thread that scrapes /metrics every 100 ms and samples the daemon's RSS."""

    def __init__(self, base: str, pid: int) -> None:
        self.base = base
        self.process = psutil.Process(pid)
        self.slowest = 0.0
        self.scrapes = 0
        self.failures: list[str] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            started = time.monotonic()
            try:
                request = urllib.request.Request(self.base + "/metrics")  # noqa: S310
                request.add_header("Connection", "close")
                with urllib.request.urlopen(request, timeout=scaled(5)) as answer:  # noqa: S310
                    answer.read()
            except OSError as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.scrapes += 1

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(scaled(10))


@dataclass(frozen=True)
class Rest:
    """The daemon at rest."""

    rss: int
    fds: int
    open_connections: float


async def at_rest(daemon: DaemonProcess, fds: int | None = None) -> Rest:
    """Sample the daemon at rest; with ``fds``, first wait (5 s at most) for its fds and
    open connections to come down to that (a scrape's own socket closes a moment later)."""
    process = psutil.Process(daemon.pid)
    deadline = time.monotonic() + scaled(5)
    while True:
        gauge = metric_sum(await daemon.metric_values(), "spikewatch_open_connections")
        now = process.num_fds()
        if fds is None or (now <= fds and gauge == 0) or time.monotonic() > deadline:
            return Rest(rss=process.memory_info().rss, fds=now, open_connections=gauge)
        await asyncio.sleep(0.1)  # another process's fd count signals nothing: poll it


@dataclass
class Daemon:
    proc: DaemonProcess
    switch: Switch
    server: hostile.HostileServer


Starter = Callable[[Handler], Awaitable[Daemon]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Starter]:
    """Start an attack server and a daemon whose one target it is (debug logs, so that
    every line the daemon can write is searched for secrets); SIGTERM it at the end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start_with(attack: Handler) -> Daemon:
            switch = Switch(attack)
            server = await stack.enter_async_context(hostile.HostileServer(switch))
            token_file = tmp_path / "token"
            token_file.write_text(API_TOKEN + "\n")
            secret_file = tmp_path / "jwt-secret"
            secret_file.write_text(JWT_SECRET + "\n")
            target = {
                "name": "hostile",
                "url": server.url,
                "welcome": {"match": WELCOME, "timeout": "2s"},
                "echo": {"payload": "ping {seq}", "match": "ping {seq}", "timeout": "1s"},
                "close_timeout": "1s",
                "handshake_timeout": "2s",
                "max_message_bytes": MAX_MESSAGE_BYTES,
                "headers": {"X-Api-Key": HEADER_SECRET},
                "auth": {"jwt": {"secret_file": str(secret_file), "claims": {"sub": "c{conn}"}}},
            }
            document = daemon_document(
                [target],
                token_file=token_file,
                log={"format": "text", "level": "debug"},
                every="1h",
                spike={"connections": SPIKE},
                timeout=f"{RUN_DEADLINE:g}s",
            )
            # The spike's failures keep recovery from passing at once: bound it well
            # inside the run's deadline.
            document["scenarios"][0]["recovery"]["timeout"] = "3s"
            config = write_config(tmp_path / "config.yaml", document)
            proc = await DaemonProcess(config, stdout=tmp_path / "stdout").start()
            stack.push_async_callback(stop, proc)
            return Daemon(proc, switch, server)

        yield start_with


async def stop(proc: DaemonProcess) -> None:
    """SIGTERM: the daemon exits 0."""
    proc.signal(signal.SIGTERM)
    assert await proc.wait(15) == 0, "\n".join(proc.lines)
    await proc.stop()


async def run(daemon: Daemon) -> tuple[dict[str, Any], float]:
    """Ask for a run; return its JSON once done, and the seconds it took."""
    started = time.monotonic()
    run_id = await daemon.proc.run_now("hostile", "quick", API_TOKEN)
    doc = await daemon.proc.run_result(run_id, RUN_DEADLINE + 5)
    return doc, time.monotonic() - started


@dataclass(frozen=True)
class Figures:
    seconds: float
    result: str
    rss_growth: int
    peak_rss_growth: int
    slowest_metrics: float
    spike: dict[str, int]


async def attack(start: Starter, handler: Handler, outcome: str) -> Figures:
    """Run the whole check for one attack, whose spike connections all end in ``outcome``;
    return what was measured."""
    daemon = await start(handler)
    await run(daemon)  # warm-up, healthy
    before = await at_rest(daemon.proc)
    daemon.switch.arm()
    with Watcher(daemon.proc.base, daemon.proc.pid) as watcher:
        doc, seconds = await run(daemon)
        after = await at_rest(daemon.proc, fds=before.fds)
    attacked = daemon.switch.accepted - (daemon.switch.armed_at or 0) - daemon.switch.skip
    assert attacked >= SPIKE, f"only {attacked} connections met the attack"

    # The run is done, by its deadline, and listed so.
    assert seconds < RUN_DEADLINE, doc
    status, _, raw = await daemon.proc.request("GET", "/api/v1/runs")
    assert status == 200
    [listed] = [r for r in json.loads(raw)["runs"] if r["id"] == doc["id"]]
    assert listed["state"] == "done", listed

    # Memory, fds and slots.
    growth = after.rss - before.rss
    assert growth < MAX_RSS_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert after.fds <= before.fds, (before, after)
    assert after.open_connections == before.open_connections == 0, (before, after)

    # /metrics answered throughout (a scrape for every whole half second the run took:
    # a run of 0.55 s has room for one, not two), each time within the second.
    assert watcher.scrapes >= int(seconds / 0.5), (watcher.scrapes, seconds)
    assert not watcher.failures, watcher.failures
    assert watcher.slowest < scaled(METRICS_WITHIN), watcher.slowest

    # No secret anywhere.
    assert daemon.proc.stdout is not None
    outputs = [daemon.proc.stdout.read_text(errors="replace"), *daemon.proc.lines]
    for path in ("/metrics", "/api/v1/runs", f"/api/v1/runs/{doc['id']}", "/api/v1/targets", "/"):
        status, _, body = await daemon.proc.request("GET", path)
        assert status == 200, path
        outputs.append(body.decode(errors="replace"))
    minted = {
        (head.header("authorization") or "").removeprefix("Bearer ")
        for head in daemon.server.requests
    } - {""}
    assert minted, "the JWTs the run minted were seen by the server"
    text = "\n".join(outputs)
    for secret in (API_TOKEN, JWT_SECRET, HEADER_SECRET, *minted):
        assert secret not in text, f"a secret ({secret[:12]}...) is in the daemon's output"

    # And each spike connection met the attack and ended as it should.
    assert doc["spike"]["outcomes"] == {outcome: SPIKE}, doc["spike"]
    return Figures(
        seconds=round(seconds, 2),
        result=str(doc.get("result")),
        rss_growth=growth,
        peak_rss_growth=watcher.peak_rss - before.rss,
        slowest_metrics=round(watcher.slowest, 3),
        spike=doc["spike"]["outcomes"],
    )


async def test_ping_flood_that_never_reads(start: Starter) -> None:
    """Pings flooding 50 spike connections, no pong read: bounded, done, nothing leaked."""
    report(await attack(start, ping_flood, "protocol_error"))


async def test_endless_empty_fragments(start: Starter) -> None:
    """Empty continuation fragments on 50 connections: bounded, done, nothing leaked."""
    report(await attack(start, empty_fragments, "protocol_error"))


async def test_fifty_unfinished_messages_near_max_message_bytes(start: Starter) -> None:
    """50 connections each holding a message 1 byte short of ~1 MiB: RSS grows < 16 MiB."""
    report(await attack(start, unfinished_message, "timeout"))


async def test_peer_that_never_reads_nor_closes(start: Starter) -> None:
    """A peer that never reads and never answers the close: each close is aborted in time."""
    report(await attack(start, never_reads, "timeout"))


async def test_close_frame_followed_by_junk(start: Starter) -> None:
    """A close frame with junk after it in the same write: done, nothing leaked."""
    report(await attack(start, close_then_junk, "closed"))


def report(figures: Figures) -> None:
    print(figures)  # the figures, for pytest -s
