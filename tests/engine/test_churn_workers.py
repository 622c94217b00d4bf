"""A churn over prober.workers processes (issue 13, item 6): each worker its share of the rate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.runner import Prober
from spikewatch.engine.worker_pool import WorkerPool
from spikewatch.target import TargetBehaviour, start_reference_target
from tests import hostile
from tests.builders import make_prober
from tests.conftest import scaled
from tests.engine.test_churn import (
    WELCOME_FRAME,
    CountingServer,
    counting_server,
    run,
    spike_attempts,
    write_config,
)


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingServer, str]]:
    async with counting_server() as served:
        yield served


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(2, lag_interval=0.02)
    await workers.start()
    yield workers
    await workers.close()


def lenient(pool: WorkerPool, limit: int = 2000) -> Prober:
    """A prober over ``pool`` that no shared CPU makes saturated: these tests count."""
    return make_prober(limit, pool=pool, lag=10.0, lateness=10.0, cpu=1e6)


async def test_a_churn_over_two_workers_keeps_the_rate_and_the_servers_counts(
    tmp_path: Path, pool: WorkerPool, counting: tuple[CountingServer, str]
) -> None:
    """A churn of 60 at 120/s over 2 workers: every start at its i/rate instant, every
    connection opened and closed (1000) on the server as counted, nothing left taken."""
    server, url = counting
    config = write_config(tmp_path, url, {"churn": {"rate": 120, "duration": "500ms"}})
    report = await run(config, lenient(pool))
    r = report.result
    assert r.result == RunResultKind.PASSED, r.message
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 60}
    ok = sum(1 for a in report.attempts if a.outcome == Outcome.OK)
    await asyncio.wait_for(server.wait_for(lambda s: s.closes.total() == ok), scaled(5))
    assert server.opens == ok == len(report.attempts)
    assert server.closes == {1000: ok}
    planned = [a.planned or 0.0 for a in spike_attempts(report)]
    assert planned == pytest.approx([planned[0] + i / 120 for i in range(60)], abs=1e-9)
    assert r.spike.churn is not None
    assert r.spike.churn.peak_in_flight >= 1
    assert r.spike.churn.achieved_rate > 60
    assert r.prober.loop_lag_p99 is not None, "the workers reported their health"


async def test_the_abort_rule_stops_a_churn_on_every_worker(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """Refused after the baseline, a 10 s churn over 2 workers stops early: the rest of
    it aborted, the run aborted, every slot given back."""
    answered = [0]
    refused = hostile.http_response(503, [("Connection", "close")])

    async def handle(connection: hostile.HostileConnection) -> None:
        answered[0] += 1
        if answered[0] <= 2:  # the baseline's probes
            await connection.accept_upgrade()
            await connection.send(WELCOME_FRAME)
            await connection.serve_frames(echo=True)
            return
        await connection.read_request()
        await connection.send(refused)

    prober = lenient(pool)
    async with hostile.HostileServer(handle) as server:
        config = write_config(
            tmp_path,
            server.url,
            {
                "churn": {"rate": 20, "duration": "10s"},
                "abort": {"error_ratio": 0.5, "min_attempts": 3},
                "recovery": {"probe_interval": "50ms", "timeout": "200ms"},
            },
        )
        report = await run(config, prober)
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    r = report.result
    assert r.result == RunResultKind.ABORTED, r.message
    assert r.spike is not None
    assert r.spike.attempted == 200
    made = r.spike.attempted - r.spike.outcomes["aborted"]
    assert 3 <= made <= 20
    assert r.spike.outcomes["http_status"] == made
    assert r.timeline["t0"] - r.timeline["spike_start"] < 3.0


async def test_max_in_flight_is_dealt_to_the_workers(tmp_path: Path, pool: WorkerPool) -> None:
    """max_in_flight 4 over 2 workers: each opens at most 2 at once; with upgrades that
    take 0.5 s, 4 of 20 starts in 0.4 s are made, the rest aborted naming the share."""
    prober = lenient(pool)
    async with await start_reference_target(TargetBehaviour(handshake_delay=0.5)) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "churn": {"rate": 50, "duration": "400ms", "max_in_flight": 4},
                "recovery": {"probe_interval": "100ms", "timeout": "3s", "tolerance": 1},
            },
            echo=None,
        )
        report = await run(config, prober)
        stats = await asyncio.wait_for(target.wait_for_stats(lambda s: s.open == 0), scaled(5))
    r = report.result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 4, "aborted": 16}
    assert r.spike.churn is not None
    assert r.spike.churn.peak_in_flight == 4
    details = {a.detail for a in spike_attempts(report) if a.phase == Phase.SPIKE and a.detail}
    assert details == {
        "churn.max_in_flight=4 reached (worker 0's share: 2)",
        "churn.max_in_flight=4 reached (worker 1's share: 2)",
    }
    assert stats.peak_open <= 4
