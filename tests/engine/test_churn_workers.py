"""A churn over prober.workers processes (issue 13, item 6): each worker its share of the rate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import Phase
from spikewatch.engine.runner import Prober
from spikewatch.engine.worker_pool import WorkerPool
from tests.builders import make_prober
from tests.engine.test_churn import (
    CountingServer,
    assert_aborted_early,
    assert_counted_on_the_server,
    counting_server,
    run,
    run_behind_slow_upgrades,
    run_refused_after_baseline,
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
    await assert_counted_on_the_server(report, server, rate=120, total=60)
    r = report.result
    assert r.spike is not None
    assert r.spike.churn is not None
    assert r.spike.churn.peak_in_flight >= 1
    assert r.spike.churn.achieved_rate > 60
    assert r.prober.loop_lag_p99 is not None, "the workers reported their health"


async def test_the_abort_rule_stops_a_churn_on_every_worker(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """Refused after the baseline, a 10 s churn over 2 workers stops early: the rest of
    it aborted, the run aborted, every slot given back."""
    report = await run_refused_after_baseline(tmp_path, lenient(pool))
    assert_aborted_early(report, most_made=20, within=3.0)


async def test_max_in_flight_is_dealt_to_the_workers(tmp_path: Path, pool: WorkerPool) -> None:
    """max_in_flight 4 over 2 workers: each opens at most 2 at once; with upgrades that
    take 0.5 s, 4 of 20 starts in 0.4 s are made, the rest aborted naming the share."""
    churn = {"rate": 50, "duration": "400ms", "max_in_flight": 4}
    report, stats = await run_behind_slow_upgrades(tmp_path, lenient(pool), churn)
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
