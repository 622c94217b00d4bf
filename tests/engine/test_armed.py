"""Pre-armed batches (issue 15): outcomes, timing from the real start, nothing leaked."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme

from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.plan import plan_spike
from spikewatch.engine.armed import (
    ArmedBatch,
    ArmedConnection,
    arm_connection,
    keep_arrival_stamps,
)
from spikewatch.engine.clock import now
from spikewatch.engine.connection import ClientConnection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.engine.spike import SpikeFiring
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import RunningTarget, start_reference_target
from tests import hostile
from tests.conftest import scaled
from tests.engine.support import make_spec

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True

WELCOME = r'"type":\s*"welcome"'
ECHO = ('{"type":"ping","seq":{seq}}', '"seq":{seq}')


def open_fds() -> int:
    """The descriptors this process holds (the stamp keeper made first: it stays)."""
    keep_arrival_stamps()
    return len(os.listdir("/proc/self/fd"))


async def fds_settle_at(expected: int) -> int:
    """The descriptor count once handles closing now are closed (uvloop closes a handle
    an iteration or so after its transport ends, with nothing to wait on)."""
    for _ in range(100):
        if open_fds() == expected:
            break
        await asyncio.sleep(0.01)
    return open_fds()


async def armed_batch(
    spec: ConnectionSpec, registry: ConnectionRegistry, size: int
) -> tuple[ArmedBatch, list[ClientConnection]]:
    """Arm ``size`` spike attempts; return the batch and the list its outcomes fill."""
    batch = ArmedBatch([Attempt(Phase.SPIKE, n) for n in range(size)])
    await batch.arm(spec, registry)
    return batch, []


async def fire(batch: ArmedBatch, done: list[ClientConnection], *, tls: bool = False) -> None:
    """Fire ``batch`` now and wait for every outcome; held connections go to ``done``."""

    async def one(attempt: Attempt, conn: ArmedConnection | None) -> None:
        assert conn is not None
        done.append(await conn.complete())

    loop = asyncio.get_running_loop()
    tasks = await batch.fire(now(), one, loop.create_task, tls=tls)
    async with asyncio.timeout(scaled(10)):
        await asyncio.gather(*tasks)


async def close_all(conns: list[ClientConnection]) -> None:
    for conn in conns:
        conn.close()
    async with asyncio.timeout(scaled(5)):
        await asyncio.gather(*(c.wait_closed() for c in conns))


async def test_an_armed_batch_runs_the_full_cycle(reference: RunningTarget) -> None:
    """Armed, fired and completed: every attempt is a full, timed cycle; slots come back."""
    registry = ConnectionRegistry(100)
    spec = make_spec(reference.url, welcome=WELCOME, echo=ECHO)
    batch, done = await armed_batch(spec, registry, 90)
    assert batch.armed == 90
    assert registry.open == 90, "arming takes the slots"
    await fire(batch, done)
    for a in batch.attempts:
        assert a.outcome == Outcome.OK, a.detail
        assert a.handshake is not None
        assert a.first_message is not None
        assert a.rtt is not None
        assert a.latency is not None
        assert 0 < a.handshake <= a.latency
        assert a.rtt <= a.latency
    assert batch.armed == 0
    await close_all(done)
    assert registry.open == 0


async def test_handshakes_are_timed_from_the_connect_at_their_arrival() -> None:
    """Started at the fire, not the arming; answers parsed later keep their arrival time,
    and the echo they cue is timed from when it went out."""
    answered: list[float] = []
    all_answered = asyncio.Event()

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(hostile.encode_frame(hostile.Opcode.TEXT, b'{"type":"welcome"}'))
        answered.append(now())
        if len(answered) == 3:
            all_answered.set()
        await connection.serve_frames(echo=True)

    async with hostile.HostileServer(handle) as server:
        registry = ConnectionRegistry(10)
        spec = make_spec(server.url, welcome=WELCOME, echo=ECHO)
        batch, done = await armed_batch(spec, registry, 3)
        armed_at = now()
        await asyncio.sleep(scaled(0.05))
        fired_at = now()
        for conn in batch.conns:
            assert conn is not None
            conn.fire()
        async with asyncio.timeout(scaled(5)):
            await all_answered.wait()
        await asyncio.sleep(scaled(0.1))  # the answers wait, unread
        parsed_from = now()
        for conn in batch.conns:
            assert conn is not None
            done.append(await conn.complete())
        for a in batch.attempts:
            assert a.outcome == Outcome.OK, a.detail
            assert a.started is not None
            assert a.handshake is not None
            assert a.first_message is not None
            assert a.rtt is not None
            assert a.ended is not None
            assert armed_at < fired_at <= a.started
            welcomed = a.started + a.handshake + a.first_message
            assert welcomed <= max(answered) + 1e-3, "stamped when it arrived"
            assert welcomed < parsed_from, "not when it was parsed"
            assert 0 < a.rtt <= a.ended - parsed_from, "from when the echo went out"
        await close_all(done)
    assert registry.open == 0


async def test_an_answer_waiting_at_the_deadline_is_seen() -> None:
    """A deadline passing before the transport reads what had arrived: not a timeout."""
    async with hostile.HostileServer(upgrade_and_wait) as server:
        registry = ConnectionRegistry(10)
        spec = make_spec(server.url, handshake_timeout=0.2)
        batch, done = await armed_batch(spec, registry, 1)
        conn = batch.conns[0]
        assert conn is not None
        conn.fire()
        async with asyncio.timeout(scaled(5)):
            await conn.done  # decided by the deadline's read, with no transport yet
        a = batch.attempts[0]
        assert a.outcome == Outcome.OK, a.detail
        assert a.handshake is not None
        assert a.handshake < 0.2
        done.append(await conn.complete())
        assert conn.is_open
        await close_all(done)
    assert registry.open == 0


async def upgrade_and_wait(connection: hostile.HostileConnection) -> None:
    await connection.accept_upgrade()
    await connection.discard_until_eof()


async def test_no_answer_by_the_deadline_is_an_upgrade_timeout() -> None:
    """Connected but unanswered: the handshake deadline ends it; the slot comes back."""

    async def silent(connection: hostile.HostileConnection) -> None:
        await connection.discard_until_eof()

    async with hostile.HostileServer(silent) as server:
        registry = ConnectionRegistry(10)
        batch, done = await armed_batch(make_spec(server.url, handshake_timeout=0.2), registry, 2)
        await fire(batch, done)
    for a in batch.attempts:
        assert a.outcome == Outcome.TIMEOUT
        assert a.step == "upgrade"
    assert registry.open == 0


async def test_a_refused_connect_ends_at_the_fire() -> None:
    """Nothing listening: refused at once, the socket closed, the slot back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = ConnectionRegistry(10)
    fds = open_fds()
    batch, done = await armed_batch(make_spec(f"ws://127.0.0.1:{port}/ws"), registry, 3)
    await fire(batch, done)
    assert [a.outcome for a in batch.attempts] == [Outcome.REFUSED] * 3
    assert all(a.step == "connect" for a in batch.attempts)
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


@pytest.mark.parametrize("complete", [False, True], ids=["before-transport", "waiting"])
async def test_a_connect_that_never_completes_times_out_at_connect(complete: bool) -> None:
    """A full accept queue drops the SYN: the connect times out, socket and slot released."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname())  # fills the queue
        try:
            port = listener.getsockname()[1]
            registry = ConnectionRegistry(10)
            spec = make_spec(f"ws://127.0.0.1:{port}/ws", handshake_timeout=0.2)
            batch, _ = await armed_batch(spec, registry, 1)
            conn = batch.conns[0]
            assert conn is not None
            conn.fire()
            async with asyncio.timeout(scaled(5)):
                if complete:
                    await conn.complete()
                else:
                    await conn.done
                    await conn.complete()
        finally:
            filler.close()
    a = batch.attempts[0]
    assert a.outcome == Outcome.TIMEOUT, a.detail
    assert a.step == "connect"
    assert "no TCP connection within 0.2s" in a.detail
    assert registry.open == 0


async def test_armed_but_never_started_is_released(reference: RunningTarget) -> None:
    """Released before its instant: no slot, no descriptor, no attempt made."""
    registry = ConnectionRegistry(100)
    fds = open_fds()
    batch, _ = await armed_batch(make_spec(reference.url), registry, 20)
    assert open_fds() == fds + 20
    batch.release()
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds
    assert all(a.started is None for a in batch.attempts)


async def test_shutdown_aborts_armed_connections(reference: RunningTarget) -> None:
    """The registry's abort_all reaches armed connections: sockets closed, slots back."""
    registry = ConnectionRegistry(100)
    fds = open_fds()
    await armed_batch(make_spec(reference.url), registry, 5)
    assert registry.abort_all() == 5
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


async def test_what_cannot_be_armed_is_left_for_the_instant(reference: RunningTarget) -> None:
    """Past the limit, or without a free slot, an attempt is not armed (and holds nothing)."""
    registry = ConnectionRegistry(3)
    spec = make_spec(reference.url)
    batch = ArmedBatch([Attempt(Phase.SPIKE, n) for n in range(5)])
    await batch.arm(spec, registry, limit=4)
    assert [c is not None for c in batch.conns] == [True, True, True, False, False]
    assert arm_connection(spec, Attempt(Phase.SPIKE, 9), registry) is None
    batch.release()
    assert registry.open == 0


async def test_no_descriptor_left_means_not_armed(reference: RunningTarget) -> None:
    """Out of descriptors while arming: not armed, the slot given back."""
    import resource  # noqa: PLC0415 - this test only

    registry = ConnectionRegistry(10)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    fillers: list[int] = []
    try:
        while len(fillers) < highest:  # fill the gaps below the limit
            fillers.append(os.dup(0))
    except OSError:
        pass
    try:
        conn = arm_connection(make_spec(reference.url), Attempt(Phase.SPIKE, 0), registry)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert conn is None
    assert registry.open == 0


async def test_a_spike_cancelled_while_arming_leaves_nothing(reference: RunningTarget) -> None:
    """A run's deadline or cancel while a batch is armed: no slot, no descriptor left."""
    registry = ConnectionRegistry(5000)
    fds = open_fds()
    run = RunInFlight(lambda _: None)
    run.begin()
    firing = SpikeFiring(run, ProberMonitor(interval=0.02), lambda: 0.0)
    plan = plan_spike(1000, 1, 0.0)
    spec = make_spec(reference.url)
    task = asyncio.create_task(firing.here(spec, registry, plan, AbortRule(None, 1)))
    async with asyncio.timeout(scaled(5)):
        while registry.open == 0:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 0 < registry.peak < 1000, "cancelled while arming"
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


async def test_the_abort_rule_releases_a_later_armed_batch() -> None:
    """Batch 1 fails, the abort rule fires: batch 2 is armed, then aborted and released."""

    async def busy(connection: hostile.HostileConnection) -> None:
        await connection.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await connection.discard_until_eof()

    async with hostile.HostileServer(busy) as server:
        registry = ConnectionRegistry(100)
        fds = open_fds()
        run = RunInFlight(lambda _: None)
        run.begin()
        firing = SpikeFiring(run, ProberMonitor(interval=0.02), lambda: 0.0)
        plan = plan_spike(20, 2, 0.3)
        reason = await firing.here(make_spec(server.url), registry, plan, AbortRule(0.5, 4))
        assert registry.open == 0
        assert await fds_settle_at(fds) == fds
    assert reason.startswith("abort.error_ratio=0.5 reached")
    outcomes = [a.outcome for a in firing.attempts]
    assert outcomes == [Outcome.HTTP_STATUS] * 10 + [Outcome.ABORTED] * 10
    assert all(a.planned is not None for a in firing.attempts)


async def test_a_spike_fires_every_batch_armed(reference: RunningTarget) -> None:
    """Three batches through SpikeFiring: all held, each started at or after its instant."""
    registry = ConnectionRegistry(100)
    run = RunInFlight(lambda _: None)
    run.begin()
    firing = SpikeFiring(run, ProberMonitor(interval=0.02), lambda: 0.0)
    spec = make_spec(reference.url, welcome=WELCOME, echo=ECHO)
    reason = await firing.here(spec, registry, plan_spike(30, 3, 0.1), AbortRule(None, 1))
    assert reason == ""
    assert [a.outcome for a in firing.attempts] == [Outcome.OK] * 30
    assert all(a.lateness is not None and a.lateness >= 0 for a in firing.attempts)
    assert len(firing.held) == 30
    await close_all(list(firing.held))
    assert registry.open == 0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_target(ca: trustme.CA) -> AsyncIterator[tuple[RunningTarget, ssl.SSLContext]]:
    """The reference target over TLS (``ca``'s certificate for localhost), and a client
    context that trusts ``ca``."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with await start_reference_target(
        TargetBehaviour(), ssl_context=server_context
    ) as target:
        yield target, client


async def test_an_armed_batch_over_tls(ca: trustme.CA, tmp_path: Path) -> None:
    """wss: the TLS handshake starts right after each chunk of connects; all succeed."""
    async with tls_target(ca) as (target, client):
        registry = ConnectionRegistry(200)
        spec = make_spec(
            target.url, welcome=WELCOME, ssl_context=client, server_hostname="localhost"
        )
        batch, done = await armed_batch(spec, registry, 70)
        await fire(batch, done, tls=True)
        assert [a.outcome for a in batch.attempts] == [Outcome.OK] * 70
        await close_all(done)
    assert registry.open == 0


async def test_an_untrusted_certificate_is_a_tls_error(ca: trustme.CA) -> None:
    """wss to an untrusted certificate, armed: tls_error, socket and slot released."""
    async with tls_target(ca) as (target, _):
        registry = ConnectionRegistry(10)
        spec = make_spec(
            target.url, ssl_context=ssl.create_default_context(), server_hostname="localhost"
        )
        batch, done = await armed_batch(spec, registry, 2)
        await fire(batch, done, tls=True)
    assert [a.outcome for a in batch.attempts] == [Outcome.TLS_ERROR] * 2
    assert "certificate verification failed" in batch.attempts[0].detail
    assert registry.open == 0


async def test_a_batch_cancelled_while_firing_leaves_nothing(reference: RunningTarget) -> None:
    """Cancelled between two chunks of connects: every connection ends, slots come back."""
    registry = ConnectionRegistry(1000)
    fds = open_fds()
    batch, _ = await armed_batch(make_spec(reference.url), registry, 300)

    async def one(attempt: Attempt, conn: ArmedConnection | None) -> None:
        assert conn is not None
        await conn.complete()

    loop = asyncio.get_running_loop()
    firing = asyncio.create_task(batch.fire(now(), one, loop.create_task))
    async with asyncio.timeout(scaled(5)):
        while not any(c is not None and c.fired for c in batch.conns):
            await asyncio.sleep(0)
    firing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await firing
    assert not all(c is not None and c.fired for c in batch.conns), "cancelled mid-batch"
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


async def test_a_connect_still_in_progress_at_the_fire_completes() -> None:
    """SYN dropped at the instant (a full accept queue), accepted on its retry: the
    request waits for the connect, then the upgrade succeeds, timed from the first SYN."""
    loop = asyncio.get_running_loop()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        listener.setblocking(False)
        filler = socket.create_connection(listener.getsockname())
        registry = ConnectionRegistry(10)
        spec = make_spec(f"ws://127.0.0.1:{listener.getsockname()[1]}/ws", handshake_timeout=10)
        batch, done = await armed_batch(spec, registry, 1)
        conn = batch.conns[0]
        assert conn is not None
        conn.fire()
        completing = asyncio.create_task(conn.complete())
        async with asyncio.timeout(scaled(10)):
            first, _ = await loop.sock_accept(listener)
            first.close()
            filler.close()
            peer, _ = await loop.sock_accept(listener)  # ours, on its SYN's retry
            with peer:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += await loop.sock_recv(peer, 4096)
                key = next(
                    line.split(b":", 1)[1].strip().decode()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                await loop.sock_sendall(peer, hostile.switching_protocols(key))
                done.append(await completing)
                a = batch.attempts[0]
                assert a.outcome == Outcome.OK, a.detail
                assert a.handshake is not None
                assert a.handshake > 0.5, "timed from the first SYN, retried after ~1 s"
                conn.abort()
    assert registry.open == 0
