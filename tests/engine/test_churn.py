"""Churn runs (issue 13, item 6) against real servers on loopback: counts, pace, limits, stops."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.churn import ChurnFiring
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import PROBE_RESERVE
from spikewatch.engine.runner import Prober, RunReport, execute_run
from spikewatch.target import TargetBehaviour, TargetStats, start_reference_target
from tests import hostile
from tests.builders import WELCOME, RunConfigs, make_prober
from tests.conftest import scaled

RUN_ON_EVERY_EVENT_LOOP = True

ECHO = {"payload": '{"type":"ping","seq":{seq}}', "match": '"seq":{seq}'}
WELCOME_FRAME = hostile.encode_frame(hostile.Opcode.TEXT, b'{"type":"welcome"}')

write_config = RunConfigs(
    target={"welcome": {"match": WELCOME, "timeout": "1s"}, "echo": ECHO, "close_timeout": "1s"},
    scenario={
        "baseline": {"probes": 2, "interval": "50ms"},
        "recovery": {"probe_interval": "50ms", "timeout": "3s", "tolerance": 4, "slack": "50ms"},
        "thresholds": {"success_ratio": 0.99},
    },
)


async def run(config: Any, prober: Prober | None = None) -> RunReport:
    prober = prober or make_prober()
    report = await asyncio.wait_for(
        execute_run(config.targets[0], config.scenarios[0], prober), scaled(30)
    )
    assert prober.registry.open == 0, "a run leaves no slot taken"
    assert prober.registry.abort_all() == 0, "a run leaves no connection tracked"
    return report


def spike_attempts(report: RunReport) -> list[Any]:
    return [a for a in report.attempts if a.phase == Phase.SPIKE]


@dataclass
class CountingServer:
    """A `websockets` server (not spikewatch's) that welcomes, echoes, and counts."""

    opens: int = 0
    closes: Counter[int | None] = field(default_factory=Counter)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        self.opens += 1
        self._notify()
        try:
            await ws.send('{"type":"welcome"}')
            async for message in ws:
                await ws.send(message)
        finally:
            self.closes[ws.close_code] += 1
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[CountingServer], bool]) -> None:
        while not predicate(self):
            await self._changed.wait()


@asynccontextmanager
async def counting_server() -> AsyncIterator[tuple[CountingServer, str]]:
    """Serve a CountingServer on 127.0.0.1, port 0; yield it and its url."""
    server = CountingServer()
    async with serve(server.handler, "127.0.0.1", 0) as listener:
        port = next(iter(listener.sockets)).getsockname()[1]
        yield server, f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
async def counting() -> AsyncIterator[tuple[CountingServer, str]]:
    async with counting_server() as served:
        yield served


async def assert_counted_on_the_server(
    report: RunReport, server: CountingServer, rate: int, total: int
) -> None:
    """The run passed with its ``total`` churn connections ok, each opened and closed (1000)
    on the server as spikewatch counted it, started at i/``rate`` from the churn's start."""
    r = report.result
    assert r.result == RunResultKind.PASSED, r.message
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": total}
    ok = sum(1 for a in report.attempts if a.outcome == Outcome.OK)
    await asyncio.wait_for(server.wait_for(lambda s: s.closes.total() == ok), scaled(5))
    assert server.opens == ok == len(report.attempts)
    assert server.closes == {1000: ok}
    planned = [a.planned or 0.0 for a in spike_attempts(report)]
    assert planned == pytest.approx([planned[0] + i / rate for i in range(total)], abs=1e-9)


async def test_churn_counts_equal_the_servers_and_keep_the_schedule(
    tmp_path: Path, counting: tuple[CountingServer, str]
) -> None:
    """A churn of 40 at 80/s: every connection opened and closed (1000) on the server as
    spikewatch counted it, started at i/rate from the churn's start, and it passes."""
    server, url = counting
    config = write_config(tmp_path, url, {"churn": {"rate": 80, "duration": "500ms"}})
    report = await run(config)
    await assert_counted_on_the_server(report, server, rate=80, total=40)
    r = report.result
    assert r.spike is not None
    assert all(a.lateness is not None and a.lateness >= 0 for a in spike_attempts(report))
    assert r.spike.churn is not None
    assert r.spike.churn.rate == 80
    assert 40 <= r.spike.churn.achieved_rate <= 80 * (1 + 1e-6)
    assert r.spike.message_rtt is not None, "each churn connection ran the echo"
    spike_json = r.as_dict()["spike"]
    assert spike_json["shape"] == "churn"
    assert spike_json["churn"]["offered_rate_per_second"] == 80
    assert r.timeline["t0"] >= r.timeline["spike_start"] + 39 / 80


def queue_server(maxconn: int) -> tuple[hostile.HostileServer, list[int]]:
    """A proxy-like queue (HAProxy ``maxconn``): every TCP connection is accepted, but
    only ``maxconn`` are served at once; the rest wait for a free one. Returns the server
    and [served, peak served at once]."""
    slots = asyncio.Semaphore(maxconn)
    served = [0, 0, 0]  # served in all, peak at once, at once now

    async def handle(connection: hostile.HostileConnection) -> None:
        async with slots:
            served[0] += 1
            served[2] += 1
            served[1] = max(served[1], served[2])
            try:
                await connection.accept_upgrade()
                await connection.send(WELCOME_FRAME)
                await connection.serve_frames(echo=True)
            finally:
                served[2] -= 1

    return hostile.HostileServer(handle), served


async def test_churn_passes_a_maxconn_queue_that_a_spike_of_the_same_total_fails(
    tmp_path: Path,
) -> None:
    """Behind a queue serving 4 at once, a one-batch spike of 16 gets 4 through and fails;
    a churn of the same 16 at 32/s gets every one through and passes (the issue's story)."""
    server, served = queue_server(4)
    async with server:
        spike = write_config(
            tmp_path, server.url, {"spike": {"connections": 16}}, handshake_timeout="500ms"
        )
        spiked = (await run(spike)).result
        churn = write_config(
            tmp_path,
            server.url,
            {"churn": {"rate": 32, "duration": "500ms"}},
            handshake_timeout="500ms",
        )
        churned = (await run(churn)).result
    assert spiked.result == RunResultKind.FAILED, spiked.message
    assert spiked.spike is not None
    assert spiked.spike.outcomes == {"ok": 4, "timeout": 12}
    assert churned.result == RunResultKind.PASSED, churned.message
    assert churned.spike is not None
    assert churned.spike.outcomes == {"ok": 16}
    assert served[1] <= 4, "the queue never served more than 4 at once"


async def run_refused_after_baseline(tmp_path: Path, prober: Prober) -> RunReport:
    """A 10 s churn at 20/s (abort.error_ratio 0.5) against a server that serves the
    baseline's 2 probes and answers 503 to every later upgrade; returns once none is open."""
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
    return report


def assert_aborted_early(report: RunReport, most_made: int, within: float) -> None:
    """The run aborted its churn of 200 after 3 to ``most_made`` refused starts, the rest
    aborted, the recovery begun ``within`` seconds of the churn's start."""
    r = report.result
    assert r.result == RunResultKind.ABORTED, r.message
    assert r.spike is not None
    assert r.spike.attempted == 200
    made = r.spike.attempted - r.spike.outcomes["aborted"]
    assert 3 <= made <= most_made
    assert r.spike.outcomes["http_status"] == made
    assert r.timeline["t0"] - r.timeline["spike_start"] < within


async def test_the_abort_rule_stops_a_churn_at_once_and_frees_every_slot(
    tmp_path: Path,
) -> None:
    """Past abort.error_ratio the churn stops: every start still planned is aborted now
    (a 10 s churn ends in well under that), the run is aborted, no slot stays taken."""
    report = await run_refused_after_baseline(tmp_path, make_prober())
    assert_aborted_early(report, most_made=10, within=2.0)
    r = report.result
    assert r.spike is not None
    assert r.spike.churn is not None
    assert r.spike.churn.achieved_rate < 20


async def test_a_deadline_in_the_middle_of_a_churn_leaves_no_slot_taken(
    tmp_path: Path,
) -> None:
    """A run whose deadline falls while churn connections wait on their upgrades ends in
    error, with every slot given back and nothing left open on the target."""
    prober = make_prober()
    async with await start_reference_target(TargetBehaviour(handshake_delay=0.3)) as target:
        config = write_config(
            tmp_path,
            target.url,
            {"churn": {"rate": 50, "duration": "10s"}, "timeout": "1500ms"},
            echo=None,
        )
        report = await run(config, prober)
        await asyncio.wait_for(target.wait_for_stats(lambda s: s.open == 0), scaled(5))
    r = report.result
    assert r.result == RunResultKind.ERROR
    assert "deadline" in r.message
    assert r.spike is not None
    assert r.spike.outcomes.get("error", 0) > 0, "the deadline cut churn attempts short"
    assert r.spike.outcomes.get("ok", 0) > 0


async def run_behind_slow_upgrades(
    tmp_path: Path, prober: Prober, churn: dict[str, Any]
) -> tuple[RunReport, TargetStats]:
    """``churn`` against the reference target whose upgrades take 0.5 s (recovery probes
    every 100 ms, tolerance 1); returns the run and the target's counts once none is open."""
    async with await start_reference_target(TargetBehaviour(handshake_delay=0.5)) as target:
        config = write_config(
            tmp_path,
            target.url,
            {
                "churn": churn,
                "recovery": {"probe_interval": "100ms", "timeout": "3s", "tolerance": 1},
            },
            echo=None,
        )
        report = await run(config, prober)
        stats = await asyncio.wait_for(target.wait_for_stats(lambda s: s.open == 0), scaled(5))
    return report, stats


async def test_max_in_flight_aborts_starts_past_it_instead_of_queueing(tmp_path: Path) -> None:
    """With max_in_flight 3 and upgrades that take 0.5 s, the first 3 of 20 starts in 0.4 s
    are made and the other 17 aborted; at most 3 were open at once, on both sides."""
    churn = {"rate": 50, "duration": "400ms", "max_in_flight": 3}
    report, stats = await run_behind_slow_upgrades(tmp_path, make_prober(), churn)
    r = report.result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 3, "aborted": 17}
    assert r.spike.churn is not None
    assert r.spike.churn.peak_in_flight == 3
    assert r.spike.churn.max_in_flight == 3
    aborted = [a for a in spike_attempts(report) if a.outcome == Outcome.ABORTED]
    assert {a.detail for a in aborted} == {"churn.max_in_flight=3 reached"}
    assert stats.peak_open <= 3


async def test_the_registrys_limit_aborts_churn_starts_past_it(tmp_path: Path) -> None:
    """With 2 slots free beside the probes' reserve and upgrades that take 0.5 s, 2 of the
    churn's 10 starts are made and 8 aborted by the limit, as a spike's would be."""
    prober = make_prober(PROBE_RESERVE + 2)
    report, _ = await run_behind_slow_upgrades(tmp_path, prober, {"rate": 50, "duration": "200ms"})
    r = report.result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 2, "aborted": 8}
    aborted = {a.detail for a in spike_attempts(report) if a.outcome == Outcome.ABORTED}
    assert aborted == {f"limits.max_connections={PROBE_RESERVE + 2} reached, 4 kept for probes"}


async def test_a_deadline_while_churn_connections_close_aborts_them(tmp_path: Path) -> None:
    """Churn connections whose closing handshake the target never answers are waited for
    within the close timeout; a deadline meanwhile aborts them, and no slot stays taken."""
    served = [0]

    async def handle(connection: hostile.HostileConnection) -> None:
        served[0] += 1
        await connection.accept_upgrade()
        await connection.send(WELCOME_FRAME)
        if served[0] <= 2:  # the baseline's probes close as they should
            await connection.serve_frames(echo=False)
        else:
            await connection.discard_until_eof()

    prober = make_prober()
    async with hostile.HostileServer(handle) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"churn": {"rate": 20, "duration": "200ms"}, "timeout": "1s"},
            echo=None,
            close_timeout="5s",
        )
        report = await run(config, prober)
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    r = report.result
    assert r.result == RunResultKind.ERROR
    assert "deadline" in r.message
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 4}, "each cycle succeeded before its close was cut"


async def test_a_churn_cut_short_before_it_started_records_no_plan() -> None:
    """A churn that never started (a deadline in the baseline) has no pace to report."""
    run_state = RunInFlight(lambda _: None)
    firing = ChurnFiring(run_state, ProberMonitor(interval=0.02), time.time, rate=5, duration=1)
    assert firing.plan_record() is None


async def test_a_sharded_replica_fires_its_share_of_the_churn(
    tmp_path: Path, counting: tuple[CountingServer, str]
) -> None:
    """Replica 1 of 2 fires every other start of a 20-connection churn at 40/s, at its
    planned instant: 10 connections, offered at 20/s."""
    _, url = counting
    config = write_config(tmp_path, url, {"churn": {"rate": 40, "duration": "500ms"}})
    prober = make_prober()
    report = await asyncio.wait_for(
        execute_run(config.targets[0], config.scenarios[0], prober, share=(1, 2)), scaled(30)
    )
    assert prober.registry.open == 0
    r = report.result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 10}
    assert r.spike.churn is not None
    assert r.spike.churn.rate == 20
    planned = [a.planned or 0.0 for a in spike_attempts(report)]
    assert planned == pytest.approx([planned[0] + i / 20 for i in range(10)], abs=1e-9)
