"""Pre-armed connections that end early: at the fire, at the handshake deadline before
their transport, cancelled or aborted while handed over; and batches only partly armed."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import trustme

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine.armed import ArmedBatch, ArmedConnection, _set_once
from spikewatch.engine.clock import now
from spikewatch.engine.connection import ClientConnection, open_connection
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.target.server import RunningTarget
from tests import hostile
from tests.conftest import scaled
from tests.engine.support import make_spec
from tests.engine.test_armed import (
    WELCOME,
    armed_batch,
    close_all,
    fds_settle_at,
    fire,
    open_fds,
    tls_target,
    upgrade_and_wait,
)

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True


def only(batch: ArmedBatch) -> ArmedConnection:
    """The batch's one armed connection."""
    conn = batch.conns[0]
    assert conn is not None
    return conn


async def assert_cancelled_and_released(a: Attempt, registry: ConnectionRegistry, fds: int) -> None:
    """Check that ``a`` ended as cancelled and that its slot and descriptor are back."""
    assert a.outcome == Outcome.ERROR
    assert a.detail == "cancelled before the attempt finished"
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


async def test_an_address_the_kernel_will_not_route_fails_at_the_fire() -> None:
    """connect() fails at once (loopback's broadcast address): no route, socket and slot back."""
    registry = ConnectionRegistry(10)
    fds = open_fds()
    batch, done = await armed_batch(make_spec("ws://127.255.255.255:1/ws"), registry, 2)
    await fire(batch, done)
    for a in batch.attempts:
        assert a.outcome == Outcome.ERROR
        assert a.step == "connect"
        assert a.detail.startswith("no route to the target:"), a.detail
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


async def test_a_refused_wss_connect_fails_when_completed() -> None:
    """wss sends nothing at the fire: the refusal is read from the socket when it is
    completed, and it is a refusal, not a TLS error; socket and slot back."""
    registry = ConnectionRegistry(10)
    fds = open_fds()
    spec = make_spec(
        f"ws://127.0.0.1:{hostile.unused_port()}/ws",
        ssl_context=ssl.create_default_context(),
        server_hostname="localhost",
    )
    batch, done = await armed_batch(spec, registry, 2)
    await fire(batch, done, tls=True)
    assert [a.outcome for a in batch.attempts] == [Outcome.REFUSED] * 2
    assert all(a.step == "connect" for a in batch.attempts)
    assert registry.open == 0
    assert await fds_settle_at(fds) == fds


@pytest.mark.parametrize(
    ("server", "outcome"),
    [
        # A page longer than one read: the first read ends the exchange.
        (lambda: hostile.status_server(503, body=b"x" * 100_000), Outcome.HTTP_STATUS),
        (hostile.silent_server, Outcome.TIMEOUT),
    ],
    ids=["rejected", "unanswered"],
)
async def test_decided_at_the_deadline_before_the_transport_gives_the_slot_back_at_once(
    server: Callable[[], hostile.HostileServer], outcome: Outcome
) -> None:
    """A 503 waiting, or nothing answered, when the handshake deadline comes before the
    transport: the upgrade's outcome, and the socket and slot are given back then, not
    when the run ends."""
    async with server() as target:
        registry = ConnectionRegistry(10)
        fds = open_fds()
        batch, _ = await armed_batch(make_spec(target.url, handshake_timeout=0.2), registry, 1)
        conn = only(batch)
        conn.fire()
        async with asyncio.timeout(scaled(5)):
            await conn.done  # decided at the deadline, with no transport yet
        a = batch.attempts[0]
        assert (a.outcome, a.step) == (outcome, "upgrade"), a.detail
        assert registry.open == 0
        assert await conn.complete() is conn
        assert await fds_settle_at(fds) == fds


async def test_a_welcome_longer_than_one_read_waiting_at_the_deadline_is_read_whole() -> None:
    """101 and a 100 KB welcome arrived before the deadline, no transport yet: read in
    several pulls, the attempt succeeds and is held once it gets its transport."""
    sent = asyncio.Event()
    welcome = b'{"type":"welcome","pad":"' + b"x" * 100_000 + b'"}'

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(hostile.encode_frame(hostile.Opcode.TEXT, welcome))
        sent.set()
        await connection.serve_frames(echo=False)

    async with hostile.HostileServer(handle) as server:
        registry = ConnectionRegistry(10)
        spec = make_spec(server.url, welcome=WELCOME, handshake_timeout=0.3)
        batch, done = await armed_batch(spec, registry, 1)
        conn = only(batch)
        conn.fire()
        async with asyncio.timeout(scaled(5)):
            await sent.wait()
            await conn.done  # the deadline's pulls read the 101 and the whole welcome
        a = batch.attempts[0]
        assert a.outcome == Outcome.OK, a.detail
        assert a.first_message is not None
        done.append(await conn.complete())
        assert conn.is_open
        await close_all(done)
    assert registry.open == 0


async def test_cancelled_while_awaiting_its_outcome_ends_it() -> None:
    """Cancelled with its transport made, awaiting the welcome: the cancel goes on up, the
    attempt ends as cancelled, socket and slot given back."""
    async with hostile.HostileServer(upgrade_and_wait) as server:
        registry = ConnectionRegistry(10)
        fds = open_fds()
        spec = make_spec(server.url, welcome=WELCOME, welcome_timeout=30)
        batch, _ = await armed_batch(spec, registry, 1)
        conn = only(batch)
        conn.fire()
        completing = asyncio.create_task(conn.complete())
        async with asyncio.timeout(scaled(5)):
            # Past its connect: the future the task waits on is the outcome (the 101 read
            # alone does not say that create_connection has returned).
            while getattr(completing, "_fut_waiter", None) is not conn.done:
                await asyncio.sleep(0)
        completing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await completing
        await assert_cancelled_and_released(batch.attempts[0], registry, fds)


async def test_aborted_while_handed_to_its_transport_leaves_nothing() -> None:
    """Aborted (a shutdown) in the loop turn its socket is handed to a transport: the hand
    over is cancelled, the attempt ends as cancelled, socket and slot given back."""
    async with hostile.HostileServer(upgrade_and_wait) as server:
        registry = ConnectionRegistry(10)
        fds = open_fds()
        batch, _ = await armed_batch(make_spec(server.url, welcome=WELCOME), registry, 1)
        conn = only(batch)
        conn.fire()
        loop = asyncio.get_running_loop()
        completing = loop.create_task(conn.complete())
        loop.call_soon(conn.abort)  # runs right after complete()'s first step
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(scaled(5)):
                await completing
        await assert_cancelled_and_released(batch.attempts[0], registry, fds)


async def test_a_batch_past_the_arm_limit_opens_the_rest_at_the_instant(
    reference: RunningTarget,
) -> None:
    """Two of four armed: the other two are opened the usual way when the batch fires, and
    all four succeed."""
    registry = ConnectionRegistry(10)
    spec = make_spec(reference.url, welcome=WELCOME)
    batch = ArmedBatch([Attempt(Phase.SPIKE, n) for n in range(4)])
    await batch.arm(spec, registry, limit=2)
    assert batch.armed == 2
    done: list[ClientConnection] = []

    async def one(attempt: Attempt, conn: ArmedConnection | None) -> None:
        if conn is not None:
            done.append(await conn.complete())
            return
        opened = await open_connection(spec, attempt, registry, keep_open=True)
        assert opened is not None
        done.append(opened)

    loop = asyncio.get_running_loop()
    tasks = await batch.fire(now(), one, loop.create_task)
    async with asyncio.timeout(scaled(10)):
        await asyncio.gather(*tasks)
    assert [a.outcome for a in batch.attempts] == [Outcome.OK] * 4
    await close_all(done)
    assert registry.open == 0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_a_tls_batch_cancelled_while_firing_leaves_nothing(ca: trustme.CA) -> None:
    """wss, partly armed, cancelled after its first chunk got its tasks: those tasks are
    cancelled, every armed connection ends, every slot and descriptor comes back."""
    async with tls_target(ca) as (target, client):
        registry = ConnectionRegistry(1000)
        fds = open_fds()
        spec = make_spec(target.url, ssl_context=client, server_hostname="localhost")
        batch = ArmedBatch([Attempt(Phase.SPIKE, n) for n in range(200)])
        await batch.arm(spec, registry, limit=150)
        started: list[asyncio.Task[None]] = []

        async def one(attempt: Attempt, conn: ArmedConnection | None) -> None:
            assert conn is not None
            await conn.complete()

        def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
            task = asyncio.get_running_loop().create_task(coro)
            started.append(task)
            return task

        firing = asyncio.create_task(batch.fire(now(), one, spawn, tls=True))
        async with asyncio.timeout(scaled(5)):
            while not started:
                await asyncio.sleep(0)
        firing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await firing
        assert all(task.cancelled() or task.cancelling() for task in started)
        await asyncio.gather(*started, return_exceptions=True)
        assert not all(c is not None and c.fired for c in batch.conns), "cancelled mid-batch"
        assert registry.open == 0
        assert await fds_settle_at(fds) == fds


async def test_a_writable_wake_after_its_waiter_was_cancelled_does_nothing() -> None:
    """The socket found writable in the loop turn its waiter was cancelled: no error."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiter.cancel()
    _set_once(waiter)
    assert waiter.cancelled()


async def test_a_close_waiting_at_the_hand_over_is_left_to_the_transport() -> None:
    """The target read the request and closed before the socket got its transport: the
    first read finds the end of the stream and leaves it to the transport, which ends the
    attempt as closed during the upgrade; socket and slot given back."""
    closed = asyncio.Event()

    async def hang_up(connection: hostile.HostileConnection) -> None:
        await connection.read_request()
        connection.writer.close()
        await connection.writer.wait_closed()
        closed.set()

    async with hostile.HostileServer(hang_up) as server:
        registry = ConnectionRegistry(10)
        fds = open_fds()
        batch, _ = await armed_batch(make_spec(server.url), registry, 1)
        conn = only(batch)
        conn.fire()
        async with asyncio.timeout(scaled(5)):
            await closed.wait()
            await conn.complete()
        a = batch.attempts[0]
        assert a.outcome == Outcome.CLOSED, a.detail
        assert a.detail == "the peer closed the connection during the upgrade"
        assert registry.open == 0
        assert await fds_settle_at(fds) == fds


async def test_an_answer_read_at_the_hand_over_leaves_no_descriptor_to_close_twice() -> None:
    """A 503 already there when the socket gets its transport ends the attempt inside
    connection_made, before create_connection returns: the socket object is left with no
    descriptor (uvloop attached it to the closed transport, which never let go of it: when
    collected it closed that number again, by then another connection's)."""
    answered = asyncio.Event()

    async def busy(connection: hostile.HostileConnection) -> None:
        await connection.read_request()
        await connection.send(hostile.http_response(503, body=b"busy"))
        answered.set()
        await connection.discard_until_eof()

    async with hostile.HostileServer(busy) as server:
        registry = ConnectionRegistry(10)
        fds = open_fds()
        batch, _ = await armed_batch(make_spec(server.url), registry, 1)
        conn = only(batch)
        sock = conn._sock  # the socket object that is handed to the transport
        assert sock is not None
        conn.fire()
        async with asyncio.timeout(scaled(5)):
            await answered.wait()
            await conn.complete()
        a = batch.attempts[0]
        assert (a.outcome, a.step) == (Outcome.HTTP_STATUS, "upgrade"), a.detail
        assert sock.fileno() == -1
        assert registry.open == 0
        assert await fds_settle_at(fds) == fds
