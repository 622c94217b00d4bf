"""Hostile peers against one connection's budgets (issue 12): floods end, slots come back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.connection import MAX_CONTROL_FRAMES_PER_SECOND, open_connection
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import execute_run
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.engine.worker_pool import WorkerPool
from spikewatch.protocol.frames import MAX_FRAGMENTS, Opcode
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import start_reference_target
from tests import hostile
from tests.builders import RunConfigs, make_prober
from tests.conftest import scaled
from tests.engine.support import make_spec

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True

WELCOME = r'"type":\s*"welcome"'
#: What one flooding connection sends at most, so that every test is bounded.
FLOOD_FRAMES = 200_000


def ping_flood_server() -> hostile.HostileServer:
    """Answer 101, then send pings as fast as the client takes them, never reading."""
    ping = hostile.encode_frame(Opcode.PING, b"p" * 125)
    chunk = ping * 500

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        for _ in range(FLOOD_FRAMES // 500):
            await connection.send(chunk)

    return hostile.HostileServer(handle)


def empty_fragment_server() -> hostile.HostileServer:
    """Answer 101, then start a text message and continue it with empty fragments."""
    start = hostile.encode_frame(Opcode.TEXT, b"", fin=False)
    empty = hostile.encode_frame(Opcode.CONTINUATION, b"", fin=False) * 1000

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(start)
        for _ in range(FLOOD_FRAMES // 1000):
            await connection.send(empty)

    return hostile.HostileServer(handle)


def unfinished_message_server(declared: int, sent: int) -> hostile.HostileServer:
    """Answer 101, then a binary frame declaring ``declared`` bytes, ``sent`` of them only."""
    frame = hostile.encode_frame(Opcode.BINARY, b"m" * sent, declared_length=declared)

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(frame)
        await connection.discard_until_eof()

    return hostile.HostileServer(handle)


async def attempt(spec: ConnectionSpec, registry: ConnectionRegistry, conn: int) -> Attempt:
    a = Attempt(Phase.SPIKE, conn)
    connection = await open_connection(spec, a, registry)
    if connection is not None:
        await asyncio.wait_for(connection.wait_closed(), scaled(5))
    return a


async def test_ping_flood_is_failed_within_a_second_and_frees_every_slot() -> None:
    """A peer flooding pings while reading nothing is a protocol_error in about 1 s."""
    registry = ConnectionRegistry(100)
    async with ping_flood_server() as server:
        spec = make_spec(server.url, welcome=WELCOME, welcome_timeout=30, close_timeout=1)
        attempts = await asyncio.wait_for(
            asyncio.gather(*(attempt(spec, registry, i) for i in range(10))), scaled(10)
        )
    for a in attempts:
        assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
        assert a.detail == f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
        assert a.started is not None
        assert a.ended is not None
        assert a.ended - a.started < scaled(2)
    assert registry.open == 0
    assert registry.abort_all() == 0


async def test_endless_empty_fragments_are_a_protocol_error() -> None:
    """A message continued by empty fragments forever is refused past MAX_FRAGMENTS."""
    registry = ConnectionRegistry(100)
    async with empty_fragment_server() as server:
        spec = make_spec(server.url, welcome=WELCOME, welcome_timeout=30, close_timeout=1)
        a = await asyncio.wait_for(attempt(spec, registry, 1), scaled(10))
    assert a.outcome == Outcome.PROTOCOL_ERROR, a.detail
    assert f"more than {MAX_FRAGMENTS} fragments" in a.detail
    assert registry.open == 0


async def test_unfinished_messages_past_the_receive_budget_are_the_probers_limit() -> None:
    """Partial messages are held up to the shared budget; past it attempts are the
    prober's 'error', and every byte is given back when the connections end."""
    registry = ConnectionRegistry(100, receive_budget_bytes=10 * 64 * 1024)
    async with unfinished_message_server(declared=100_000, sent=60_000) as server:
        spec = make_spec(server.url, welcome=WELCOME, welcome_timeout=1, close_timeout=1)
        attempts = await asyncio.wait_for(
            asyncio.gather(*(attempt(spec, registry, i) for i in range(20))), scaled(10)
        )
    outcomes = sorted(a.outcome for a in attempts if a.outcome is not None)
    budget = registry.receive_budget
    # Ten messages of 60,000 bytes fit; one refused mid-message can leave room for nine.
    assert outcomes.count(Outcome.TIMEOUT) in (9, 10), outcomes
    assert outcomes.count(Outcome.TIMEOUT) + outcomes.count(Outcome.ERROR) == 20
    refused = [a for a in attempts if a.outcome == Outcome.ERROR]
    assert all("limits.max_receive_buffer_bytes=655360" in a.detail for a in refused)
    assert budget.refused == len(refused)
    assert 540_000 <= budget.peak <= budget.limit
    assert budget.held == 0, "every connection gave its bytes back"
    assert registry.open == 0


def slow_ping_server() -> hostile.HostileServer:
    """Answer 101, then ping within the budget (500 a second) and never read a byte."""
    ping = hostile.encode_frame(Opcode.PING, b"p" * 125)

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        for _ in range(FLOOD_FRAMES // 50):
            if connection.writer.is_closing() or connection.reader.at_eof():
                return
            connection.writer.write(ping * 5)
            await asyncio.sleep(0.01)

    return hostile.HostileServer(handle)


write_config = RunConfigs(
    target={"welcome": {"match": WELCOME, "timeout": "1s"}, "close_timeout": "1s"},
    scenario={
        "baseline": {"probes": 3, "interval": "50ms"},
        "spike": {"connections": 5},
        "timeout": "60s",
    },
)


def welcome_then_unfinished_server(
    welcomed: int, declared: int, sent: int
) -> hostile.HostileServer:
    """Welcome the first ``welcomed`` connections (the baseline's probes); to every later
    one send a binary frame declaring ``declared`` bytes, ``sent`` of them only."""
    welcome = hostile.encode_frame(Opcode.TEXT, b'{"type": "welcome"}')
    unfinished = hostile.encode_frame(Opcode.BINARY, b"m" * sent, declared_length=declared)
    count = 0

    async def handle(connection: hostile.HostileConnection) -> None:
        nonlocal count
        count += 1
        await connection.accept_upgrade()
        await connection.send(welcome if count <= welcomed else unfinished)
        await connection.discard_until_eof()

    return hostile.HostileServer(handle)


async def test_each_worker_holds_its_share_of_the_receive_budget(tmp_path: Path) -> None:
    """Over 2 workers each process holds half of limits.max_receive_buffer_bytes in partial
    messages: one 60,000-byte part fits a worker's 65,536, the others are refused, and
    their detail names the share and the total."""
    pool = WorkerPool(2, lag_interval=0.02)
    await pool.start()
    try:
        prober = make_prober(pool=pool, lag=10.0, lateness=10.0, receive_budget_bytes=131_072)
        async with welcome_then_unfinished_server(2, 100_000, 60_000) as server:
            config = write_config(
                tmp_path,
                server.url,
                {
                    "baseline": {"probes": 2, "interval": "10ms"},
                    "spike": {"connections": 8},
                    "recovery": {"probe_interval": "100ms", "timeout": "300ms"},
                },
            )
            report = await asyncio.wait_for(
                execute_run(config.targets[0], config.scenarios[0], prober), scaled(30)
            )
    finally:
        await pool.close()
    spike = [a for a in report.attempts if a.phase == Phase.SPIKE]
    outcomes = sorted(str(a.outcome) for a in spike)
    refused = [a for a in spike if a.outcome == Outcome.ERROR]
    # Each worker's last part standing is held (it times out awaiting the rest of its
    # welcome), two of 60,000 never fit in 65,536: 2 held, 6 refused. With the default
    # 64 MiB of a worker before, all 8 were held.
    assert len(refused) == 6, outcomes
    # The detail names the worker's share and the configured total it is a part of.
    named = (
        "the prober's receive buffers are full (worker share 65536 of"
        " limits.max_receive_buffer_bytes=131072 over 2 workers): "
    )
    assert all(a.detail.startswith(named) for a in refused), refused
    assert prober.registry.open == 0


async def test_a_whole_run_against_a_deaf_pinging_target_ends_target_down_promptly(
    tmp_path: Path,
) -> None:
    """Baseline probes against a peer that pings and never reads end in their timeouts:
    the run is target_down within seconds, not at its deadline, and nothing stays open."""
    prober = make_prober()
    async with slow_ping_server() as server:
        config = write_config(tmp_path, server.url, {})
        report = await asyncio.wait_for(
            execute_run(config.targets[0], config.scenarios[0], prober), scaled(15)
        )
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    r = report.result
    assert r.result == RunResultKind.TARGET_DOWN, r.message
    assert r.baseline.outcomes == {"timeout": 3}
    assert r.duration < 3 * (1 + 1) + scaled(2)
    assert prober.registry.open == 0
    assert prober.registry.abort_all() == 0


async def test_a_deadline_inside_a_batch_leaves_no_phantom_connection(tmp_path: Path) -> None:
    """A run whose deadline falls while a batch waits on its upgrades ends with every slot
    given back, on either loop (uvloop left 16-144 phantoms in issue 12)."""
    prober = make_prober()
    slow_after_burst = TargetBehaviour(burst_threshold=50, slow_delay=3.0, recovery_delay=5.0)
    async with await start_reference_target(slow_after_burst) as target:
        config = write_config(
            tmp_path,
            target.url,
            {"spike": {"connections": 300}, "timeout": "600ms"},
            close_timeout="200ms",
        )
        report = await asyncio.wait_for(
            execute_run(config.targets[0], config.scenarios[0], prober), scaled(10)
        )
    assert report.result.result == RunResultKind.ERROR
    assert "deadline" in report.result.message
    spike = report.result.spike
    assert spike is not None
    assert spike.outcomes.get("error", 0) > 0, "the deadline cut attempts short"
    assert prober.registry.open == 0
    assert prober.registry.abort_all() == 0
