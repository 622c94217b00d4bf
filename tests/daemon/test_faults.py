"""Faults around the daemon: real ``spikewatch run`` processes against misbehaving targets.

Every target here is a :class:`FaultServer` on 127.0.0.1: a small WebSocket server that
counts, on its own side, every TCP connection it holds (now and at the peak) and how
each upgraded one ended, and whose faults the test switches while a run is in flight
(listener down, accept-then-close, never answer). What the daemon reports is checked
against what the server saw.

The daemon does not say which phase a run in flight is in (the API shows only
``running``), so the tests read the phase from the server: the order of a run's
connections is fixed (baseline probes one after another, then the stable connections,
then the spike, then recovery probes), so the n-th connection the server accepts says
where the run is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from tests.builders import write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess, metric_sum
from tests.hostile import HostileConnection, HostileServer, Opcode, encode_frame, read_frame

TOKEN = "faults-test-token-0123456789"

#: A schedule that never fires while a test runs: every run is asked for through the API.
NEVER = {"cron": "0 0 1 1 *"}

#: What a connection meets at the server: served (101, pongs, close handshake), never
#: answered, or read and closed at once; "down" is not a mode but a closed listener.
Mode = Literal["serve", "hang", "close"]

#: What asyncio logs when the daemon's listener cannot accept for want of a descriptor.
ACCEPT_EMFILE = "socket.accept() out of system resource"

#: Results a run may end with (the contract's set).
RESULTS = {"passed", "failed", "target_down", "aborted", "invalid", "error"}


@dataclass(eq=False)
class FaultServer(HostileServer):
    """A WebSocket server whose faults a test switches; it counts what it sees.

    ``mode`` (or ``plan(n)`` for the n-th accepted connection, from 1) decides how each new
    connection is treated. :meth:`down` closes the listener (connects are refused) and
    :meth:`up` opens it again on the same port.
    """

    mode: Mode = "serve"
    plan: Callable[[int], Mode] | None = None
    #: The most TCP connections open at once, as seen by this server.
    peak: int = 0
    #: Connections answered with a 101.
    upgraded: int = 0
    #: Connections read and closed without an answer.
    closed_early: int = 0
    #: Upgraded connections that ended with the client's close frame (a graceful close).
    close_frames: int = 0
    #: Upgraded connections that ended without one (EOF or reset: the client vanished).
    vanished: int = 0
    _listening: bool = field(default=False, init=False, repr=False)

    def _notify(self) -> None:
        self.peak = max(self.peak, self.open)
        super()._notify()

    def down(self) -> None:
        """Stop listening: new connects are refused (open connections stay)."""
        assert self._server is not None
        self._server.close()
        self._listening = False

    async def up(self) -> None:
        """Listen again on the same port."""
        if not self._listening:
            self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", self.port)
            self._listening = True

    async def __aenter__(self) -> FaultServer:
        await super().__aenter__()
        self._listening = True
        return self


def fault_server(mode: Mode = "serve", plan: Callable[[int], Mode] | None = None) -> FaultServer:
    """Return a :class:`FaultServer` (use it as an async context manager)."""

    async def handle(connection: HostileConnection) -> None:
        index = server.accepted
        mode = server.plan(index) if server.plan is not None else server.mode
        if mode == "hang":
            await connection.discard_until_eof()
            return
        if mode == "close":
            await connection.read_request()
            server.closed_early += 1
            return
        await connection.accept_upgrade()
        server.upgraded += 1
        server._notify()
        try:
            while True:
                frame = await read_frame(connection.reader)
                if frame.opcode == Opcode.CLOSE:
                    server.close_frames += 1
                    # RFC 6455 §5.5.1 and §7.1.1: answer, then the server closes TCP first.
                    await connection.send(encode_frame(Opcode.CLOSE, frame.payload[:2]))
                    return
                if frame.opcode == Opcode.PING:
                    await connection.send(encode_frame(Opcode.PONG, frame.payload))
                elif frame.opcode == Opcode.TEXT:
                    await connection.send(encode_frame(Opcode.TEXT, frame.payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            server.vanished += 1
            raise

    server = FaultServer(handle, mode=mode, plan=plan)
    return server


# -- configs --------------------------------------------------------------------------------


def scenario(name: str, **overrides: Any) -> dict[str, Any]:
    """A small, fast scenario that runs only when asked; ``overrides`` replace its keys."""
    doc: dict[str, Any] = {
        "name": name,
        "schedule": NEVER,
        "spike": {"connections": 4},
        "baseline": {"probes": 2, "interval": "50ms"},
        "recovery": {
            "probe_interval": "100ms",
            "consecutive": 2,
            "timeout": "10s",
            "tolerance": 1.0,
            "slack": "50ms",
        },
        "thresholds": {"success_ratio": 0.9},
        "abort": {"error_ratio": None},
    }
    doc.update(overrides)
    return doc


def config(
    url: str,
    token_file: Path,
    scenarios: list[dict[str, Any]],
    *,
    limits: dict[str, int] | None = None,
    targets: list[str] | None = None,
) -> dict[str, Any]:
    """A daemon config on 127.0.0.1:0 whose targets (``targets`` names) all point at ``url``."""
    return {
        "server": {"listen": "127.0.0.1:0", "api_token_file": str(token_file)},
        "log": {"format": "text", "level": "info"},
        "limits": limits or {"max_connections": 200, "max_concurrent_runs": 1},
        # These tests are about the target's faults and the daemon's own; a loaded CI
        # machine must not turn their runs into `invalid` ones.
        "prober": {
            "max_loop_lag_p99": "2s",
            "max_start_lateness_p99": "2s",
            "max_cpu_percent": 1e4,
        },
        "targets": [
            {"name": name, "url": url, "handshake_timeout": "10s", "close_timeout": "1s"}
            for name in (targets or ["flaky"])
        ],
        "scenarios": scenarios,
    }


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def open_fds() -> int:
    """Return how many file descriptors this test process holds."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
async def no_fd_left() -> AsyncIterator[None]:
    """Every test gives back every file descriptor it took (sockets, pipes, processes)."""
    before = open_fds()
    yield
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(5)
    # Transports close on a later loop turn, a child's pipes when it is reaped: poll the
    # kernel's table for a bounded moment (nothing signals that a descriptor closed).
    while (after := open_fds()) > before and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert after <= before, f"{after - before} file descriptor(s) left open"


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Path], Any]]:
    """Start daemons from config files; SIGKILL any still running at the end."""
    procs: list[DaemonProcess] = []

    async def start(path: Path) -> DaemonProcess:
        proc = await DaemonProcess(path).start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        await proc.stop()


async def stop_cleanly(proc: DaemonProcess) -> None:
    """SIGTERM: exit 0 within the contract's 10 s, nothing left to abort at shutdown."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 0, "\n".join(proc.lines)
    assert loop.time() - start < scaled(10)
    # asyncio logs each accept() that fails for want of a descriptor with a traceback
    # (see test_accept_at_emfile_logs_a_few_lines_not_a_flood); any other is a crash.
    tracebacks = proc.count("Traceback") - proc.count(ACCEPT_EMFILE)
    assert tracebacks == 0, "\n".join(proc.lines)


async def assert_serving(proc: DaemonProcess) -> None:
    """The daemon answers /healthz, /readyz and /metrics."""
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, body = await proc.request("GET", path)
        assert status == 200, (path, body)


def total(outcomes: dict[str, int], *names: str) -> int:
    return sum(outcomes.get(n, 0) for n in names)


def phase_outcomes(run: dict[str, Any]) -> Iterator[tuple[str, dict[str, int]]]:
    """Yield (phase, outcomes) of every phase the run has."""
    for phase in ("baseline", "stable", "spike", "recovery"):
        part = run.get(phase)
        if part is not None:
            yield phase, part["outcomes"]


# -- 3. SIGTERM in every phase ---------------------------------------------------------------

#: The phase tests' run: P baseline probes, then S stable connections, then N spike ones.
P, S, N = 3, 3, 6


@dataclass(frozen=True)
class PhaseCase:
    """How to hold a run in one phase, and how the server tells it is there."""

    overrides: dict[str, Any]
    plan: Callable[[int], Mode]
    reached: Callable[[FaultServer], bool]


PHASES: dict[str, PhaseCase] = {
    # The first baseline probe is never answered: the run waits in its baseline.
    "baseline": PhaseCase(
        {},
        lambda n: "hang" if n == 1 else "serve",
        lambda s: s.accepted >= 1,
    ),
    # The last stable connection is never answered: the others are open and pinging.
    "stable": PhaseCase(
        {},
        lambda n: "hang" if n == P + S else "serve",
        lambda s: s.accepted >= P + S and s.upgraded >= P + S - 1 and s.open == S,
    ),
    # The first of two batches is open; the second is 5 s away.
    "spike": PhaseCase(
        {"spike": {"connections": N, "batches": 2, "batch_interval": "5s"}},
        lambda n: "serve",
        lambda s: s.upgraded >= P + S + N // 2,
    ),
    # Recovery is decided (two good probes, closed); the spike is held for 30 s.
    "hold": PhaseCase(
        {"hold": "30s"},
        lambda n: "serve",
        lambda s: s.accepted >= P + S + N + 2 and s.close_frames >= P + 2 and s.open == S + N,
    ),
    # The spike is closed; recovery probes are never answered, so recovery goes on.
    "recovery": PhaseCase(
        {"hold": "0s"},
        lambda n: "hang" if n > P + S + N else "serve",
        lambda s: s.accepted > P + S + N and s.close_frames >= P + N,
    ),
}


@pytest.mark.parametrize("phase", list(PHASES))
async def test_sigterm_in_each_phase_exits_0_and_closes_every_connection(
    phase: str, tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """SIGTERM in baseline, stable, spike, hold or recovery: exit 0 within 10 s, and at the
    server every connection is gone, every upgraded one with the client's close frame."""
    case = PHASES[phase]
    shape = {
        "baseline": {"probes": P, "interval": "300ms"},
        "stable": {"connections": S, "ping_interval": "200ms"},
        "spike": {"connections": N},
    }
    doc = scenario("phases", **(shape | case.overrides))
    async with fault_server(plan=case.plan) as server:
        path = write_config(tmp_path / "c.yaml", config(server.url, token_file, [doc]))
        proc = await started(path)
        await proc.run_now("flaky", "phases", TOKEN)
        async with asyncio.timeout(scaled(20)):
            await server.wait_for(case.reached)
        assert server.open > 0, "the run should hold connections when the signal comes"
        await stop_cleanly(proc)
        async with asyncio.timeout(scaled(5)):
            await server.wait_for(lambda s: s.open == 0)
        assert server.vanished == 0, f"{server.vanished} upgraded connection(s) not closed"
        assert server.close_frames == server.upgraded
        assert proc.count("connection(s) aborted") == 0, "\n".join(proc.lines)
        assert proc.count("spikewatch stopped") == 1


# -- 1. a target that flaps during a run -------------------------------------------------------


async def flap(server: FaultServer, first: int, proc: DaemonProcess) -> list[int]:
    """From the spike's first connection (the ``first``-th): up, down, closing, down, up.

    Time from that connection, with the spike's batches at 0, 1 and 2 s and recovery
    probes every 100 ms from about 2 s: batch 1 is served, batch 2 refused, batch 3
    closed; early recovery probes are closed, then refused, then served. Each switch
    is half a batch interval away from the batches. Return /healthz's answers taken
    while the target was down.
    """
    await server.wait_for(lambda s: s.accepted >= first)
    loop = asyncio.get_running_loop()
    zero = loop.time()

    async def at(offset: float) -> None:
        # The script's own timeline against the daemon's real batch instants: the sleep
        # is the behaviour under test (a target that changes state while a run goes on).
        await asyncio.sleep(max(0.0, zero + offset - loop.time()))

    health = []
    await at(0.5)
    server.down()
    health.append((await proc.request("GET", "/healthz"))[0])
    await at(1.5)
    server.mode = "close"
    await server.up()
    await at(2.6)
    server.down()
    health.append((await proc.request("GET", "/healthz"))[0])
    await at(3.1)
    server.mode = "serve"
    await server.up()
    return health


async def test_flapping_target_outcomes_match_what_the_server_saw(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """A target that goes up, down (refusing), half up (closing) and up again during the
    spike and recovery: every attempt is counted under its outcome, exactly as the server
    saw them, the run ends failed and recovered, the daemon keeps serving, the next run passes.
    """
    doc = scenario(
        "flap",
        spike={"connections": 15, "batches": 3, "batch_interval": "1s"},
        recovery={
            "probe_interval": "100ms",
            "consecutive": 3,
            "timeout": "10s",
            "tolerance": 1.0,
            "slack": "50ms",
        },
    )
    async with fault_server() as server:
        path = write_config(tmp_path / "c.yaml", config(server.url, token_file, [doc]))
        proc = await started(path)
        run_id = await proc.run_now("flaky", "flap", TOKEN)
        health = await asyncio.wait_for(flap(server, 3, proc), scaled(15))
        run = await proc.run_result(run_id, 20)
        assert health == [200, 200]

        assert run["result"] == "failed", run["message"]
        assert run["spike"]["attempted"] == 15
        assert run["spike"]["outcomes"] == {"ok": 5, "refused": 5, "closed": 5}
        recovery = run["recovery"]
        assert recovery["recovered"] is True
        assert total(recovery["outcomes"], "closed") >= 1
        assert total(recovery["outcomes"], "refused") >= 1
        assert recovery["seconds"] >= 0.5
        # What the daemon counted is what the server saw: every attempt that was not
        # refused reached it, every `closed` one is one it closed unanswered.
        attempts = sum(sum(o.values()) for _, o in phase_outcomes(run))
        refused = sum(total(o, "refused") for _, o in phase_outcomes(run))
        assert attempts - refused == server.accepted
        assert sum(total(o, "closed") for _, o in phase_outcomes(run)) == server.closed_early
        assert sum(total(o, "ok") for _, o in phase_outcomes(run)) == server.upgraded
        assert {e["outcome"] for e in run["errors"]} == {"refused", "closed"}
        assert all(e["example"] for e in run["errors"])

        values = await proc.metric_values()
        for phase, outcomes in phase_outcomes(run):
            for outcome, count in outcomes.items():
                got = metric_sum(
                    values,
                    "spikewatch_connections_total",
                    phase=phase,
                    outcome=outcome,
                    scenario="flap",
                )
                assert got == count, (phase, outcome)
        assert metric_sum(values, "spikewatch_runs_total", result="failed") == 1
        await assert_serving(proc)

        # Up for good: the next run is a normal one.
        again = await proc.run_result(await proc.run_now("flaky", "flap", TOKEN), 20)
        assert again["result"] == "passed", again["message"]
        assert again["spike"]["outcomes"] == {"ok": 15}
        await stop_cleanly(proc)


# -- 2. runs slower than their interval ------------------------------------------------------


def run_interval(run: dict[str, Any]) -> tuple[float, float]:
    """Return a finished run's (start, end) in epoch seconds."""
    start = datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")).timestamp()
    return start, start + run["duration_seconds"]


def most_at_once(intervals: list[tuple[float, float]], slack: float) -> int:
    """Return the most intervals that overlap at one instant (each shrunk by ``slack``)."""
    events = sorted(
        [(start + slack, 1) for start, _ in intervals] + [(end - slack, -1) for _, end in intervals]
    )
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


async def test_runs_slower_than_their_interval_never_pile_up(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """Three pairs due every 0.5 s whose runs take over a second, two runs allowed at once:
    no pair ever runs twice at once, never more than two runs at once, and every slot that
    found its pair busy is counted in runs_skipped_total{reason="overlap"} and logged."""
    slow = {"every": "500ms"}
    docs = [
        scenario(
            name,
            schedule=slow,
            baseline={"probes": 1, "interval": "50ms"},
            spike={"connections": 3},
            hold="1s",
        )
        for name in ("a", "b", "c")
    ]
    limits = {"max_connections": 200, "max_concurrent_runs": 2}
    async with fault_server() as server:
        path = write_config(
            tmp_path / "c.yaml", config(server.url, token_file, docs, limits=limits)
        )
        proc = await started(path)
        await proc.wait_for_line(lambda line: proc.count("run finished") >= 6, 30)
        logged_before = proc.count("skipped: ")
        values = await proc.metric_values()
        logged_after = proc.count("skipped: ")
        status, _, raw = await proc.request("GET", "/api/v1/runs?limit=200")
        assert status == 200
        await stop_cleanly(proc)
    runs = [r for r in json.loads(raw)["runs"] if r["state"] == "done"]
    assert len(runs) >= 6
    assert all(r["result"] == "passed" for r in runs), [r["message"] for r in runs]
    # The daemon's own record: a pair's runs never overlap; at most two runs at once.
    for name in ("a", "b", "c"):
        mine = [run_interval(r) for r in runs if r["scenario"] == name]
        assert len(mine) >= 1
        assert most_at_once(mine, slack=0.05) == 1, name
    assert most_at_once([run_interval(r) for r in runs], slack=0.05) <= 2
    # ... and the busy slots were counted, not queued: every pair skipped at least once.
    for name in ("a", "b", "c"):
        skipped = metric_sum(values, "spikewatch_runs_skipped_total", scenario=name)
        assert skipped >= 1, name
        assert (
            metric_sum(values, "spikewatch_runs_skipped_total", scenario=name, reason="overlap")
            == skipped
        )
    counted = metric_sum(values, "spikewatch_runs_skipped_total")
    assert logged_before <= counted <= logged_after
    # The server never held more than two runs' spikes (3 each) and their probes.
    assert server.peak <= 2 * 3 + 2


# -- 4. a reload while a run is in flight ------------------------------------------------------


async def test_reload_during_a_run_applies_to_the_next_run_only(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """SIGHUP, then POST /-/reload, each while a run holds its spike: the run in flight
    finishes with the config it started with, the next run uses the new one, and the
    metrics add up over all of them. A reload that removes the pair mid-run crashes nothing.
    """

    def doc(connections: int, name: str = "held") -> dict[str, Any]:
        return config(
            server.url,
            token_file,
            [scenario(name, spike={"connections": connections}, hold="1s")],
        )

    async with fault_server() as server:
        path = write_config(tmp_path / "c.yaml", doc(6))
        proc = await started(path)
        finished: list[dict[str, Any]] = []
        for connections, reload, after in ((6, "sighup", 4), (4, "api", 3), (3, None, 3)):
            upgraded = server.upgraded
            run_id = await proc.run_now("flaky", "held", TOKEN)
            # The whole spike is open and held: the run is past the point of reading its config.
            async with asyncio.timeout(scaled(10)):
                await server.wait_for(
                    lambda s, n=connections, u=upgraded: s.open >= n and s.upgraded >= u + 2 + n
                )
            write_config(path, doc(after))
            if reload == "sighup":
                seen = proc.count("config reloaded")
                proc.signal(signal.SIGHUP)
                await proc.wait_for_line(
                    lambda _, seen=seen: proc.count("config reloaded") > seen, 10
                )
            elif reload == "api":
                status, _, raw = await proc.request("POST", "/-/reload", token=TOKEN)
                assert status == 200, raw
            run = await proc.run_result(run_id, 20)
            assert run["result"] == "passed", run["message"]
            assert run["spike"]["attempted"] == connections
            finished.append(run)

        values = await proc.metric_values()
        assert metric_sum(values, "spikewatch_runs_total") == 3
        assert metric_sum(values, "spikewatch_runs_total", result="passed") == 3
        spike = metric_sum(values, "spikewatch_connections_total", phase="spike")
        assert spike == 6 + 4 + 3
        assert metric_sum(values, "spikewatch_config_last_reload_successful") == 1

        # The pair leaves the config while its run holds the spike.
        run_id = await proc.run_now("flaky", "held", TOKEN)
        async with asyncio.timeout(scaled(10)):
            await server.wait_for(lambda s: s.open >= 3)
        write_config(path, doc(3, name="other"))
        status, _, raw = await proc.request("POST", "/-/reload", token=TOKEN)
        assert status == 200, raw
        run = await proc.run_result(run_id, 20)
        assert run["result"] == "passed"
        status, _, raw = await proc.request("GET", "/api/v1/targets")
        assert [p["scenario"] for p in json.loads(raw)["pairs"]] == ["other"]
        await assert_serving(proc)
        await stop_cleanly(proc)
    assert proc.count("crashed") == 0


async def test_run_of_a_pair_removed_mid_run_leaves_no_series_behind(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """A reload removes a pair while its run is in flight: no series of it is left."""
    async with fault_server() as server:

        def doc(name: str) -> dict[str, Any]:
            return config(
                server.url, token_file, [scenario(name, spike={"connections": 3}, hold="1s")]
            )

        path = write_config(tmp_path / "c.yaml", doc("held"))
        proc = await started(path)
        run_id = await proc.run_now("flaky", "held", TOKEN)
        async with asyncio.timeout(scaled(10)):
            await server.wait_for(lambda s: s.open >= 3)
        write_config(path, doc("other"))
        status, _, raw = await proc.request("POST", "/-/reload", token=TOKEN)
        assert status == 200, raw
        assert (await proc.run_result(run_id, 20))["result"] == "passed"
        values = await proc.metric_values()
        await stop_cleanly(proc)
    left = sorted({name for name, labels in values if ("scenario", "held") in labels})
    assert left == [], left


# -- 5. limits.max_connections across concurrent runs -----------------------------------------


async def test_max_connections_holds_across_concurrent_runs_at_the_server(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """Two runs at once, each a 14-connection spike held for 1.5 s, against one server,
    with limits.max_connections 20: the server never holds more than 20 connections at
    once, and every attempt past the limit is `aborted`, with the limit named."""
    limit, spike = 20, 14
    docs = [scenario(name, spike={"connections": spike}, hold="1500ms") for name in ("one", "two")]
    limits = {"max_connections": limit, "max_concurrent_runs": 2}
    async with fault_server() as server:
        doc = config(server.url, token_file, docs, limits=limits, targets=["left", "right"])
        # Two targets on the same server, one scenario each: two pairs, one server.
        doc["scenarios"][0]["targets"] = ["left"]
        doc["scenarios"][1]["targets"] = ["right"]
        proc = await started(write_config(tmp_path / "c.yaml", doc))
        ids = [
            await proc.run_now("left", "one", TOKEN),
            await proc.run_now("right", "two", TOKEN),
        ]
        runs = [await proc.run_result(run_id, 30) for run_id in ids]
        values = await proc.metric_values()
        await assert_serving(proc)
        await stop_cleanly(proc)
    spikes = [r["spike"]["outcomes"] for r in runs]
    assert server.peak <= limit
    # Both spikes were held at the same time, up to the limit less the probes' reserve.
    assert server.peak > spike
    ok = sum(total(o, "ok") for o in spikes)
    aborted = sum(total(o, "aborted") for o in spikes)
    assert ok + aborted == 2 * spike, spikes
    assert aborted >= 2 * spike - (limit - 4)
    assert ok == server.upgraded - sum(total(r["baseline"]["outcomes"], "ok") for r in runs) - sum(
        total(r["recovery"]["outcomes"], "ok") for r in runs
    )
    examples = [e["example"] for r in runs for e in r["errors"] if e["outcome"] == "aborted"]
    assert examples
    assert all(f"limits.max_connections={limit} reached" in e for e in examples)
    assert (
        metric_sum(values, "spikewatch_connections_total", phase="spike", outcome="aborted")
        == aborted
    )
    # Nothing else failed: the limit, not the server, stopped those attempts.
    assert all(set(o) <= {"ok", "aborted"} for o in spikes)


# -- 6. the file-descriptor limit ---------------------------------------------------------------


def fds_of(pid: int) -> int:
    """Return how many file descriptors process ``pid`` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def event_loop(proc: DaemonProcess) -> str:
    """Return the event loop the daemon says it runs on (asyncio when it does not say)."""
    for line in proc.lines:
        if "listening on" in line:
            match = re.search(r"event loop (\w+)", line)
            return match.group(1) if match else "asyncio"
    raise AssertionError("the daemon has not said it is listening")


def lower_fd_limit(pid: int, headroom: int) -> None:
    """Leave process ``pid`` room for ``headroom`` more descriptors (RLIMIT_NOFILE)."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds_of(pid) + headroom, hard))


async def test_spike_past_the_fd_limit_ends_in_clear_errors_and_the_daemon_lives_on(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """RLIMIT_NOFILE leaves room for 12 sockets; a 30-connection spike is held for 2 s
    while a second run ends: the attempts that get no socket end as `error` naming EMFILE,
    both runs end with a result (no crash), /healthz answers once descriptors are free,
    and the next run of the second passes under the same limit."""
    docs = [
        scenario("wide", spike={"connections": 30}, hold="2s"),
        # Its first baseline probe comes before the spike of "wide"; the next two find
        # every descriptor taken, so it ends (invalid) while "wide" holds them all,
        # and its report (the memory sampler behind it) must cope.
        scenario("small", baseline={"probes": 3, "interval": "400ms"}, spike={"connections": 2}),
    ]
    limits = {"max_connections": 200, "max_concurrent_runs": 2}
    async with fault_server() as server:
        proc = await started(
            write_config(tmp_path / "c.yaml", config(server.url, token_file, docs, limits=limits))
        )
        lower_fd_limit(proc.pid, 12)
        wide = await proc.run_now("flaky", "wide", TOKEN)
        small = await proc.run_now("flaky", "small", TOKEN)
        async with asyncio.timeout(scaled(10)):
            await server.wait_for(lambda s: s.open >= 8)
        # No descriptor to accept with: asyncio's loop leaves the request in the listen
        # queue until the spike closes; uvloop (libuv) accepts and drops it at once.
        try:
            status = (await proc.request("GET", "/healthz"))[0]
        except aiohttp.ClientConnectionError:  # disconnected or reset
            assert event_loop(proc) == "uvloop"
        else:
            assert status == 200
        runs = {
            name: await proc.run_result(run_id, 30)
            for name, run_id in [("wide", wide), ("small", small)]
        }
        assert proc.count("crashed") == 0, "\n".join(proc.lines)

        spike = runs["wide"]["spike"]["outcomes"]
        assert set(spike) == {"ok", "error"}, spike
        assert spike["ok"] + spike["error"] == 30
        assert spike["error"] >= 30 - 12
        for run in runs.values():
            # The prober's own limit: invalid, never blamed on the target.
            assert run["result"] == "invalid", run["message"]
            assert any("found no file descriptor" in r for r in run["prober"]["reasons"])
            causes = [e["example"] for e in run["errors"] if e["outcome"] == "error"]
            assert causes, run["errors"]
            assert all(c.startswith("too many open files (EMFILE)") for c in causes), causes
        assert runs["small"]["prober"]["rss_bytes"] > 1_000_000
        await assert_serving(proc)

        solo = await proc.run_result(await proc.run_now("flaky", "small", TOKEN), 30)
        assert solo["result"] == "passed", solo["message"]
        await stop_cleanly(proc)


async def test_accept_at_emfile_logs_a_few_lines_not_a_flood(
    tmp_path: Path, token_file: Path, started: Callable[[Path], Any]
) -> None:
    """A request while every descriptor is held, then SIGTERM: a few log lines, no flood."""
    docs = [scenario("wide", spike={"connections": 20}, hold="1500ms")]
    async with fault_server() as server:
        doc = config(server.url, token_file, docs)
        # CPython 3.11's own loop does not return after an accept fails with EMFILE
        # (python/cpython#151615): it logs and retries up to 128 times (aiohttp's backlog).
        doc["prober"]["event_loop"] = "asyncio"
        proc = await started(write_config(tmp_path / "c.yaml", doc))
        assert event_loop(proc) == "asyncio"
        lower_fd_limit(proc.pid, 8)
        run_id = await proc.run_now("flaky", "wide", TOKEN)
        async with asyncio.timeout(scaled(10)):
            await server.wait_for(lambda s: s.open >= 6)
        assert (await proc.request("GET", "/healthz"))[0] == 200
        await proc.run_result(run_id, 30)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(10) == 0
    assert 1 <= proc.count(ACCEPT_EMFILE) <= 5
    assert proc.count("Traceback") <= proc.count(ACCEPT_EMFILE)
