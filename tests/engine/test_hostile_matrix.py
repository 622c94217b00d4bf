"""Slow and hostile targets: the right outcome, within the timeouts, no socket left behind."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import gc
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from spikewatch.config import parse_config
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.core.saturation import ProberLimits
from spikewatch.engine.connection import MAX_CONTROL_FRAMES_PER_SECOND, open_connection
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import Prober, execute_run
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.protocol.handshake import UpgradeRequest
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import start_reference_target
from tests import hostile, hostile_extra
from tests.conftest import TIMER_GRAIN, scaled
from tests.engine.support import make_spec

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True


WELCOME = r'"type":\s*"welcome"'

#: Slack on top of a configured timeout for the attempt to end (timers, closing).
SLACK = 0.5


def open_fds() -> int:
    """Return how many file descriptors this process holds, after collecting garbage.

    /dev/null is left out: libuv (under uvloop) opens it once per loop, at the first
    listen, as its reserve descriptor for accepting under EMFILE; it is not a leak.
    """
    gc.collect()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "/dev/null":
                count += 1
        except OSError:  # the directory's own descriptor, gone by now
            continue
    return count


@pytest.fixture
async def fds() -> AsyncIterator[int]:
    """Yield the descriptor count before the test; check that it comes back after it."""
    before = open_fds()
    yield before
    # Closed transports give their socket back on the loop's next iterations: poll the
    # kernel's table for a bounded moment (nothing signals that a descriptor closed).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(5)
    while (after := open_fds()) > before and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert after <= before, f"{after - before} file descriptors left open"


async def attempt(spec: ConnectionSpec) -> tuple[Attempt, float]:
    """Make one attempt with ``spec``; return it and how long it took to be decided."""
    registry = ConnectionRegistry(10)
    a = Attempt(Phase.SPIKE, 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    conn = await open_connection(spec, a, registry)
    elapsed = loop.time() - started
    if conn is not None:
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert registry.open == 0, "every connection is closed and its slot released"
    return a, elapsed


async def test_dribbled_upgrade_answer_times_out(fds: int) -> None:
    """An upgrade answer dribbled a byte per 50 ms is 'timeout' at the handshake timeout."""
    async with hostile.dribble_server(0.05) as server:
        a, elapsed = await attempt(make_spec(server.url, handshake_timeout=0.4))
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.TIMEOUT, a.detail
    assert "no upgrade answer within 0.4s" in a.detail
    assert 0.4 - TIMER_GRAIN <= elapsed < 0.4 + scaled(SLACK)


async def test_server_that_never_reads_times_out(fds: int) -> None:
    """A server that never reads a 64 KiB upgrade request nor answers is 'timeout'."""
    async with hostile_extra.deaf_server() as server:
        spec = make_spec(server.url, handshake_timeout=0.4)
        # Headers large enough that the request does not fit in the socket buffers.
        spec = dataclasses.replace(
            spec,
            request=UpgradeRequest(
                resource="/ws",
                host_header=f"127.0.0.1:{server.port}",
                headers=[(f"X-Padding-{i}", "p" * 1000) for i in range(64)],
            ),
        )
        a, elapsed = await attempt(spec)
    assert a.outcome == Outcome.TIMEOUT, a.detail
    assert 0.4 - TIMER_GRAIN <= elapsed < 0.4 + scaled(SLACK)


async def test_ping_flood_while_waiting_for_welcome_is_failed_as_a_flood(fds: int) -> None:
    """Thousands of pings a second: answered up to the control-frame budget, then failed."""
    async with hostile_extra.ping_flood_server() as server:
        a, elapsed = await attempt(
            make_spec(server.url, welcome=WELCOME, welcome_timeout=5, handshake_timeout=1)
        )
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
    assert a.detail == f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
    assert elapsed < scaled(1.5), "failed at the budget, not at the welcome's timeout"
    assert server.pings > MAX_CONTROL_FRAMES_PER_SECOND
    assert server.pongs > 0, "the client answered the pings within the budget"


async def test_frame_header_of_2_to_the_40_is_protocol_error_at_once(fds: int) -> None:
    """A frame declaring 2^40 bytes is 'protocol_error' at once, not at the welcome timeout."""
    async with hostile.oversized_frame_server(2**40) as server:
        a, elapsed = await attempt(make_spec(server.url, welcome=WELCOME, welcome_timeout=3))
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
    assert elapsed < scaled(1)


async def test_half_close_after_upgrade_is_closed(fds: int) -> None:
    """A FIN right after the upgrade (shutdown SHUT_WR) is 'closed' during the welcome."""
    async with hostile_extra.half_close_server() as server:
        a, elapsed = await attempt(make_spec(server.url, welcome=WELCOME, welcome_timeout=3))
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.CLOSED, a.detail
    assert "during the welcome" in a.detail
    assert elapsed < scaled(1)


async def test_endless_upgrade_head_is_protocol_error_at_once(fds: int) -> None:
    """Header lines without end are 'protocol_error' once the head bound is passed."""
    async with hostile_extra.endless_head_server() as server:
        a, elapsed = await attempt(make_spec(server.url, handshake_timeout=3))
    assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
    assert "exceeds" in a.detail
    assert elapsed < scaled(1)


async def test_message_in_endless_fragments_is_protocol_error(fds: int) -> None:
    """Fragments that add up past max_message_bytes are 'protocol_error' at once."""
    async with hostile_extra.fragment_flood_server(100) as server:
        a, elapsed = await attempt(
            make_spec(server.url, welcome=WELCOME, welcome_timeout=3, max_message_bytes=1 << 16)
        )
    assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
    assert "max_message_bytes=65536" in a.detail
    assert elapsed < scaled(1)


async def test_unanswered_close_ends_at_the_close_timeout(fds: int) -> None:
    """A server that never answers the close frame: 'ok', and TCP is gone at close_timeout."""
    async with hostile_extra.deaf_after_welcome_server('{"type":"welcome"}') as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        a, _ = await attempt(make_spec(server.url, welcome=WELCOME, close_timeout=0.3))
        closed = loop.time() - started
    assert a.outcome == Outcome.OK, a.detail
    assert 0.3 - TIMER_GRAIN <= closed < 0.3 + scaled(SLACK)


async def test_server_that_never_starts_tls_times_out(fds: int) -> None:
    """A wss target that accepts TCP and never answers the ClientHello is 'timeout'."""
    async with hostile.silent_server() as server:
        spec = make_spec(
            server.url,
            handshake_timeout=0.3,
            ssl_context=ssl.create_default_context(),
            server_hostname="localhost",
        )
        a, elapsed = await attempt(spec)
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.TIMEOUT, a.detail
    assert "no TCP/TLS connection within 0.3s" in a.detail
    assert 0.3 - TIMER_GRAIN <= elapsed < 0.3 + scaled(SLACK)


def tls_contexts(cert: trustme.LeafCert, ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Return (server context serving ``cert``, client context trusting ``ca``)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_expired_certificate_is_tls_error(fds: int) -> None:
    """A certificate past its notAfter is 'tls_error' saying it has expired."""
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    cert = ca.issue_cert(
        "localhost",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    server_context, client = tls_contexts(cert, ca)
    async with await start_reference_target(
        TargetBehaviour(), ssl_context=server_context
    ) as target:
        a, elapsed = await attempt(
            make_spec(target.url, ssl_context=client, server_hostname="localhost")
        )
    assert a.outcome == Outcome.TLS_ERROR, a.detail
    assert "expired" in a.detail
    assert elapsed < scaled(2)


async def test_certificate_for_another_host_is_tls_error(fds: int) -> None:
    """A certificate for another name is 'tls_error' naming the host that was asked for."""
    ca = trustme.CA()
    server_context, client = tls_contexts(ca.issue_cert("other.example"), ca)
    async with await start_reference_target(
        TargetBehaviour(), ssl_context=server_context
    ) as target:
        a, elapsed = await attempt(
            make_spec(target.url, ssl_context=client, server_hostname="localhost")
        )
    assert a.outcome == Outcome.TLS_ERROR, a.detail
    assert "localhost" in a.detail
    assert elapsed < scaled(2)


async def test_whole_run_against_a_server_that_never_reads(tmp_path: Path, fds: int) -> None:
    """A run against a deaf server ends within its deadline, every connection closed."""
    async with hostile_extra.deaf_server() as server:
        config = parse_config(
            {
                "targets": [{"name": "deaf", "url": server.url, "handshake_timeout": "300ms"}],
                "scenarios": [
                    {
                        "name": "s",
                        "timeout": "5s",
                        "spike": {"connections": 5},
                        "baseline": {"probes": 2, "interval": "50ms"},
                        "recovery": {"probe_interval": "100ms", "timeout": "1s"},
                    }
                ],
            },
            base_dir=tmp_path,
        )
        prober = Prober(
            registry=ConnectionRegistry(100),
            monitor=ProberMonitor(interval=0.02),
            limits=ProberLimits(
                max_loop_lag_p99=1.0, max_start_lateness_p99=1.0, max_cpu_percent=1000.0
            ),
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        report = await execute_run(config.targets[0], config.scenarios[0], prober)
        elapsed = loop.time() - started
    assert elapsed < 5
    assert prober.registry.open == 0
    result = report.result
    assert result.result == RunResultKind.TARGET_DOWN
    assert result.baseline.outcomes == {"timeout": 2}


async def test_abort_while_connecting_ends_the_connect_at_once(fds: int) -> None:
    """Shutdown aborting an attempt still in TLS setup ends its connect task, bound or not.

    The handshake timer was the connect's only bound; abort cancels it, so abort must
    end the connect itself, or the socket lingers until the kernel gives up.
    """
    async with hostile.silent_server() as server:
        spec = make_spec(
            server.url,
            handshake_timeout=60,
            ssl_context=ssl.create_default_context(),
            server_hostname="localhost",
        )
        registry = ConnectionRegistry(10)
        a = Attempt(Phase.SPIKE, 1)
        task = asyncio.create_task(open_connection(spec, a, registry))
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 1), scaled(5))
        assert registry.abort_all() == 1
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, scaled(5))
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert a.outcome == Outcome.ERROR
    assert registry.open == 0
