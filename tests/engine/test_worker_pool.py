"""A spike spread over worker processes: real workers, a real server counting on its side."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import jwt
import psutil
import pytest

from spikewatch.config import SpikewatchConfig
from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.runner import Prober, RunReport, execute_run
from spikewatch.engine.spike_on_workers import SpikeOnWorkers
from spikewatch.engine.worker_messages import (
    Attempts,
    Close,
    Failed,
    Prepare,
    Prepared,
    Spike,
    WireMessage,
    target_to_wire,
)
from spikewatch.engine.worker_pool import (
    WorkerLostError,
    WorkerPool,
    WorkerProcess,
    worker_command,
)
from tests import hostile_extra
from tests.builders import RunConfigs, make_prober
from tests.conftest import scaled
from tests.hostile import (
    Opcode,
    close_payload,
    encode_frame,
    http_response,
    read_frame,
    read_request_head,
    switching_protocols,
)

SECRET = "a-test-secret-that-is-32-bytes-long!"
Policy = Literal["ok", "503", "close"]


class CountingServer:
    """A WebSocket server that knows every connection by the ``{conn}`` in its JWT.

    ``policy(conn)`` decides its answer: ``ok`` (101, then a closing handshake when the
    client closes), ``503``, or ``close`` (the TCP connection closed unanswered). While
    ``gate`` is clear, 101 answers wait for it.
    """

    def __init__(self, policy: Callable[[int], Policy]) -> None:
        self.policy = policy
        self.seen: Counter[int] = Counter()
        self.answered: dict[int, Policy] = {}
        self.closed_by_client: set[int] = set()
        self.open: set[int] = set()
        self.gate = asyncio.Event()
        self.gate.set()
        self.changed = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(scaled(20)):
            while not predicate():
                await self.changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            self._notify()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request_head(reader)
        token = (head.header("authorization") or "").removeprefix("Bearer ")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="test")
        conn = int(claims["sub"].removeprefix("spikewatch-"))
        self.seen[conn] += 1
        policy = self.policy(conn)
        self._notify()
        if policy == "503":
            writer.write(http_response(503, body=b"busy"))
        elif policy == "ok":
            await self.gate.wait()
            key = head.header("sec-websocket-key")
            assert key is not None
            writer.write(switching_protocols(key))
            self.open.add(conn)
        self.answered[conn] = policy
        self._notify()
        if policy != "ok":
            return
        try:
            while True:
                frame = await read_frame(reader)
                if frame.opcode == Opcode.CLOSE:
                    self.closed_by_client.add(conn)
                    writer.write(encode_frame(Opcode.CLOSE, close_payload(1000)))
                    await writer.drain()
                    return
        finally:
            self.open.discard(conn)

    async def __aenter__(self) -> CountingServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()


write_config = RunConfigs(
    target={
        "handshake_timeout": "10s",
        "auth": {
            "jwt": {"secret_file": "secret", "claims": {"sub": "spikewatch-{conn}", "aud": "test"}}
        },
    },
    scenario={
        "baseline": {"probes": 3, "interval": "20ms"},
        "recovery": {
            "probe_interval": "50ms",
            "consecutive": 2,
            "timeout": "5s",
            "tolerance": 5.0,
            "slack": "50ms",
        },
    },
    sections={"prober": {"workers": 2}},
    files={"secret": SECRET},
)


def lenient_prober(pool: WorkerPool, limit: int = 2000) -> Prober:
    """A prober over ``pool`` that no shared CPU makes saturated: these tests count."""
    return make_prober(limit, pool=pool, lag=10.0, lateness=10.0, cpu=1e6)


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(2, lag_interval=0.02)
    await workers.start()
    yield workers
    await workers.close()


async def run(
    config: SpikewatchConfig, prober: Prober, progress: Callable[[str], None] | None = None
) -> RunReport:
    report = await execute_run(config.targets[0], config.scenarios[0], prober, progress=progress)
    assert prober.registry.open == 0, "a run leaves no slot taken"
    return report


def worker_connections(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def spike_policy(first: int, connections: int) -> Callable[[int], Policy]:
    """Return a policy that fails some spike connections (503 or closed), never probes."""

    def policy(conn: int) -> Policy:
        if first <= conn < first + connections:
            if conn % 5 == 0:
                return "503"
            if conn % 7 == 0:
                return "close"
        return "ok"

    return policy


async def test_merged_figures_are_the_servers(tmp_path: Path, pool: WorkerPool) -> None:
    """workers=2, with 503s and dropped connections: the merged figures are the server's."""
    connections, first = 60, 3  # conns 0-2 are the baseline probes
    async with CountingServer(spike_policy(first, connections)) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": connections, "batches": 2, "batch_interval": "100ms"}},
        )
        report = await run(config, lenient_prober(pool))
        await server.wait_for(lambda: not server.open)
    r = report.result
    spike = [a for a in report.attempts if a.phase.value == "spike"]
    spike_conns = range(first, first + connections)
    assert [a.conn for a in spike] == list(spike_conns)
    # Every spike connection reached the server exactly once.
    assert {c: server.seen[c] for c in spike_conns} == dict.fromkeys(spike_conns, 1)
    expected = {"ok": Outcome.OK, "503": Outcome.HTTP_STATUS, "close": Outcome.CLOSED}
    assert {a.conn: a.outcome for a in spike} == {
        c: expected[server.answered[c]] for c in spike_conns
    }
    counts = Counter(server.answered[c] for c in spike_conns)
    assert counts["503"] > 0
    assert counts["close"] > 0
    assert r.spike is not None
    assert r.spike.attempted == connections
    assert r.spike.outcomes == {
        "ok": counts["ok"],
        "http_status": counts["503"],
        "closed": counts["close"],
    }
    assert r.upgrade_statuses == {"503": counts["503"]}
    assert r.spike.handshake is not None
    assert r.spike.handshake.count == counts["ok"]  # a 503 completes no upgrade
    assert r.spike.start_lateness is not None
    assert r.spike.start_lateness.count == connections
    # T0 is the last spike attempt's end, on the same clock as the run's own timeline.
    t0_after_start = max(a.ended or 0.0 for a in spike) - (spike[0].planned or 0.0)
    assert r.timeline["t0"] - r.timeline["spike_start"] == pytest.approx(t0_after_start)
    # Every held connection was closed by its worker with a closing handshake.
    assert {c for c in spike_conns if server.answered[c] == "ok"} <= server.closed_by_client
    assert r.recovery is not None
    assert r.recovery.recovered
    assert r.result == RunResultKind.PASSED, r.message


async def test_held_connections_are_spread_and_closed_on_cancel(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """During hold both workers hold part of the spike, counted in the daemon's slots; a
    cancelled run closes them all and gives every slot back."""
    connections, first = 40, 3
    async with CountingServer(lambda _: "ok") as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": connections}, "hold": f"{scaled(60)}s"},
        )
        prober = lenient_prober(pool)
        reported = asyncio.Event()

        def progress(message: str) -> None:
            if message.startswith("spike: last attempt finished"):
                reported.set()  # every worker has reported its share

        task = asyncio.create_task(run(config, prober, progress))
        spike_conns = range(first, first + connections)
        await server.wait_for(lambda: all(c in server.open for c in spike_conns))
        async with asyncio.timeout(scaled(20)):
            await reported.wait()
        held = [worker_connections(w.pid or 0, server.port) for w in pool.workers]
        assert held == [connections // 2, connections // 2]
        assert prober.registry.open >= connections
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert prober.registry.open == 0
        await server.wait_for(lambda: not server.open)
        assert set(spike_conns) <= server.closed_by_client


async def test_killed_worker_makes_its_share_error_and_is_replaced(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A worker killed mid-spike: its share is error with the cause, the run is error, the
    daemon goes on, and the next run gets a new worker and passes."""
    connections, first = 20, 3
    async with CountingServer(lambda _: "ok") as server:
        config = write_config(tmp_path, server.url, {"spike": {"connections": connections}})

        def progress(message: str) -> None:
            if message.startswith("spike: ") and "connections in" in message:
                server.gate.clear()  # upgrades of the spike wait until the kill

        prober = lenient_prober(pool)
        task = asyncio.create_task(run(config, prober, progress))
        spike_conns = range(first, first + connections)
        await server.wait_for(lambda: all(server.seen[c] for c in spike_conns))
        victim = pool.workers[1]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        victim.open_inbox("watch")  # told as soon as the daemon side sees it gone
        with pytest.raises(WorkerLostError, match="exited with code -9"):
            await victim.receive("watch", scaled(10), "die")
        victim.close_inbox("watch")
        server.gate.set()
        report = await task
        r = report.result
        assert r.result == RunResultKind.ERROR
        assert "worker 1 exited with code -9 (SIGKILL)" in r.message
        spike = [a for a in report.attempts if a.phase.value == "spike"]
        lost = [a for a in spike if a.conn % 2 != first % 2]  # worker 1: every second conn
        kept = [a for a in spike if a.conn % 2 == first % 2]
        assert {a.outcome for a in lost} == {Outcome.ERROR}
        assert all("worker 1 exited with code -9" in a.detail for a in lost)
        assert {a.outcome for a in kept} == {Outcome.OK}
        assert r.spike is not None
        assert r.spike.outcomes == {"ok": len(kept), "error": len(lost)}
        assert any(e.outcome == Outcome.ERROR and "worker 1" in e.example for e in r.errors)

        again = (await run(config, prober)).result
        assert again.result == RunResultKind.PASSED, again.message
        assert again.spike is not None
        assert again.spike.outcomes == {"ok": connections}
        assert victim.pid not in (None, old_pid)


async def test_connection_limit_counts_every_process(tmp_path: Path, pool: WorkerPool) -> None:
    """limits.max_connections holds across workers: attempts past it are aborted, not sent."""
    connections, first, free = 16, 3, 10
    async with CountingServer(lambda _: "ok") as server:
        config = write_config(
            tmp_path, server.url, {"spike": {"connections": connections}, "hold": "200ms"}
        )
        prober = lenient_prober(pool, limit=free + PROBE_RESERVE)
        r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": free, "aborted": connections - free}
    assert sum(server.seen[c] for c in range(first, first + connections)) == free
    assert prober.registry.peak <= free + PROBE_RESERVE
    assert any("limits.max_connections=14 reached" in e.example for e in r.errors)


async def test_a_failed_attempts_slot_serves_a_later_batch_as_in_one_process(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """10 free slots, 3 batches of 10 answered 503: all 30 are tried, as in one process."""
    connections, first, free = 30, 3, 10

    def policy(conn: int) -> Policy:
        return "503" if first <= conn < first + connections else "ok"

    async with CountingServer(policy) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": connections, "batches": 3, "batch_interval": "300ms"}},
        )
        prober = lenient_prober(pool, limit=free + PROBE_RESERVE)
        r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"http_status": connections}
    assert sum(server.seen[c] for c in range(first, first + connections)) == connections
    assert prober.registry.peak <= free + PROBE_RESERVE
    assert prober.registry.open == 0


async def test_abort_rule_is_decided_over_all_workers(tmp_path: Path, pool: WorkerPool) -> None:
    """The abort rule sums every worker's progress; later batches are aborted everywhere."""
    connections, first = 40, 3

    def policy(conn: int) -> Policy:
        return "503" if first <= conn < first + connections else "ok"

    async with CountingServer(policy) as server:
        config = write_config(
            tmp_path,
            server.url,
            {
                "spike": {
                    "connections": connections,
                    "batches": 2,
                    "batch_interval": f"{scaled(1.0)}s",
                },
                "abort": {"error_ratio": 0.5, "min_attempts": 4},
            },
        )
        r = (await run(config, lenient_prober(pool))).result
    assert r.result == RunResultKind.ABORTED
    assert r.spike is not None
    assert r.spike.outcomes == {"http_status": 20, "aborted": 20}
    # The second batch never reached the server, from either worker.
    assert sum(server.seen[c] for c in range(first, first + connections)) == 20
    assert any("abort.error_ratio=0.5 reached" in e.example for e in r.errors)


# -- one worker process, spoken to directly --------------------------------------------


@pytest.fixture
async def worker() -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(0, worker_command())
    await process.ensure_started()
    yield process
    await process.stop()


async def test_worker_on_sigterm_closes_its_connections_and_exits_0(
    tmp_path: Path, worker: WorkerProcess
) -> None:
    """SIGTERM: the worker closes what it holds with closing handshakes, then exits 0."""
    async with CountingServer(lambda _: "ok") as server:
        config = write_config(tmp_path, server.url, {"spike": {"connections": 3}})
        worker.open_inbox("r")
        worker.send(
            Prepare(
                run="r",
                target=target_to_wire(config.targets[0]),
                address="127.0.0.1",
                lag_interval=0.02,
            )
        )
        assert await worker.receive("r", scaled(30), "prepare") == Prepared(run="r")
        now = asyncio.get_running_loop().time()
        worker.send(Spike(run="r", groups=[(now, [7, 8, 9])], progress=False))
        answer = await worker.receive("r", scaled(10), "report")
        assert isinstance(answer, Attempts)
        assert [row[5] for row in answer.attempts] == ["ok", "ok", "ok"]
        assert server.open == {7, 8, 9}
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)
        with pytest.raises(WorkerLostError, match="worker 0 exited with code 0"):
            await worker.receive("r", scaled(10), "exit")
        assert server.closed_by_client == {7, 8, 9}


async def test_worker_answers_what_it_cannot_do(tmp_path: Path, worker: WorkerProcess) -> None:
    """An unknown run or a target it cannot build: "failed" with the reason, still serving."""
    worker.open_inbox("r")
    worker.send(Close(run="r"))
    answer = await worker.receive("r", scaled(30), "answer")
    assert answer == Failed(run="r", error="no run 'r' here")
    worker.send(Prepare(run="r", target={"name": "BAD"}, address="x", lag_interval=0.02))
    answer = await worker.receive("r", scaled(10), "answer")
    assert isinstance(answer, Failed)
    assert "ValidationError" in answer.error
    assert worker.alive


class Launch(WireMessage):
    """A message no worker knows."""

    type: Literal["launch"] = "launch"


async def test_worker_exits_on_a_message_it_does_not_know(worker: WorkerProcess) -> None:
    """A message outside the protocol ends the worker (status 2): it never guesses."""
    worker.open_inbox("r")
    worker.send(Prepare(run="r", target={}, address="x", lag_interval=0.02))
    await worker.receive("r", scaled(30), "answer")
    worker.send(Launch(run="r"))
    with pytest.raises(WorkerLostError, match="worker 0 exited with code 2"):
        await worker.receive("r", scaled(10), "exit")


async def test_worker_exits_when_its_stdin_ends(worker: WorkerProcess) -> None:
    """The daemon gone (stdin closed): the worker exits by itself."""
    worker.open_inbox("r")
    await worker.stop()
    assert not worker.alive
    with pytest.raises(WorkerLostError, match="was stopped"):
        worker.send(Close(run="r"))


async def test_silent_worker_is_killed_after_its_deadline() -> None:
    """A worker that does not answer in time is killed, and the wait says so."""
    process = WorkerProcess(3, ["sleep", "60"])
    await process.ensure_started()
    process.open_inbox("r")
    try:
        with pytest.raises(WorkerLostError, match=r"worker 3 did not get ready within 0\.2s"):
            await process.receive("r", 0.2, "get ready")
        assert not process.alive
    finally:
        await process.stop()


# -- workers that break the protocol, each in one way (real processes, scripted) -------

FAKE_WORKER = """
import json, struct, sys
mode = sys.argv[1]
out = sys.stdout.buffer
def send(message):  # by hand, not through the models: this worker breaks the protocol
    body = json.dumps(message).encode()
    out.write(struct.pack(">I", len(body)) + body); out.flush()
health = {"type": "health", "loop_lag_p99": None, "loop_lag_max": None, "cpu_percent": None,
          "cpu_window": 0.0}
while header := sys.stdin.buffer.read(4):
    message = json.loads(sys.stdin.buffer.read(struct.unpack(">I", header)[0]))
    run, kind = message["run"], message["type"]
    if mode == "garbage":
        out.write(struct.pack(">I", 5) + b"hello"); out.flush()
    elif kind == "prepare":
        if mode == "refuse":
            send({"type": "failed", "run": run, "error": "no"})
        elif mode == "bad-prepared":
            send({"type": "prepared", "run": run, "ready": True})
        else:
            send({"type": "prepared", "run": run})
    elif kind == "spike" and mode == "bad-report":
        send({"type": "attempts", "run": run, "attempts": []})
    elif kind == "spike" and mode == "wrong-answer":
        send({"type": "closed", "run": run})
    elif kind == "spike" and mode == "bad-progress":
        send({"type": "progress", "run": run, "finished": "many", "failed": 0})
    elif kind == "spike" and mode in ("bad-health", "chatty"):
        rows = [["spike", c, at, at, at, "refused", "no", None, None, None, None, None, "connect"]
                for at, conns in message["groups"] for c in conns]
        send({"type": "attempts", "run": run, "attempts": rows})
    elif kind == "close" and mode != "silent":
        if mode == "chatty":
            send({"type": "progress", "run": run, "finished": 4, "failed": 4})
        send({"type": "closed", "run": run})
    elif kind == "finish" and mode == "chatty":
        send({"type": "prepared", "run": run})
        send({"type": "progress", "run": run, "finished": -1, "failed": 0})
        send(dict(health, run=run, rss_bytes=7))
    elif kind == "finish" and mode == "bad-health":
        send({"type": "health", "run": run})
    elif kind == "finish" and mode != "silent":
        send(dict(health, run=run, rss_bytes=1))
"""


async def fire_on_fake(mode: str, *, within: float = 10.0) -> tuple[SpikeOnWorkers, list[Attempt]]:
    """Fire 4 planned attempts over one scripted worker; return the spike and the attempts."""
    pool = WorkerPool(1, lag_interval=0.02, command=[sys.executable, "-c", FAKE_WORKER, mode])
    registry = ConnectionRegistry(100)
    spike = SpikeOnWorkers(pool, "r", registry, reserve=0)
    config = load_config_text("ws://127.0.0.1:9/ws")
    loop = asyncio.get_running_loop()
    attempts = [Attempt(Phase.SPIKE, c, planned=loop.time()) for c in range(4)]
    try:
        await spike.prepare(config.targets[0], "127.0.0.1")
        await spike.fire(attempts, AbortRule(None, 1), loop.time() + scaled(within))
        await spike.close_held()
        await spike.finish()
    finally:
        await pool.close()
    assert registry.open == 0
    return spike, attempts


def load_config_text(url: str) -> SpikewatchConfig:
    from spikewatch.config import parse_config  # noqa: PLC0415 - only these tests need it

    return parse_config(
        {
            "targets": [{"name": "t", "url": url}],
            "scenarios": [{"name": "s", "spike": {"connections": 4}}],
        }
    )


@pytest.mark.parametrize(
    ("mode", "cause"),
    [
        ("refuse", "worker 0 cannot prepare: no"),
        ("garbage", "worker 0 sent a malformed message: not JSON"),
        ("bad-report", "worker 0 sent a bad report: 4 attempt(s) missing"),
        ("bad-prepared", "worker 0 cannot prepare: prepared message: ready: Extra inputs"),
        ("bad-progress", "worker 0 sent a bad report: progress message: finished: Input should"),
        ("wrong-answer", "worker 0 sent a bad report: 'closed' instead of its attempts"),
    ],
)
async def test_a_misbehaving_worker_loses_its_share_with_the_cause(mode: str, cause: str) -> None:
    """Whatever way a worker breaks the protocol, its share is error with that cause."""
    spike, attempts = await fire_on_fake(mode)
    assert {a.outcome for a in attempts} == {Outcome.ERROR}
    assert all(a.detail.startswith(cause) for a in attempts), attempts[0].detail
    assert spike.failures[0].startswith(cause)


async def test_a_worker_silent_past_its_deadline_is_killed() -> None:
    """A worker that never reports its share is killed at the deadline; never a hang."""
    spike, attempts = await fire_on_fake("silent", within=0.5)
    assert {a.outcome for a in attempts} == {Outcome.ERROR}
    assert "did not report its share of the spike within" in attempts[0].detail
    assert spike.health == [None]


async def test_a_bad_health_report_is_dropped() -> None:
    """A health report without its fields is not trusted: the worker shows as unreported."""
    spike, attempts = await fire_on_fake("bad-health")
    assert {a.outcome for a in attempts} == {Outcome.REFUSED}
    assert spike.failures == []
    assert spike.health == [None]


def test_pool_size_must_be_positive() -> None:
    """A pool of no workers is a programming error."""
    with pytest.raises(ValueError, match="size must be >= 1"):
        WorkerPool(0, lag_interval=0.02)


async def test_left_over_messages_are_not_taken_for_answers() -> None:
    """A late message from a cancelled step (progress, prepared) is skipped, not an answer."""
    spike, attempts = await fire_on_fake("chatty")
    assert {a.outcome for a in attempts} == {Outcome.REFUSED}
    assert spike.failures == []
    assert spike.health[0] is not None
    assert spike.health[0].rss_bytes == 7


async def test_run_cancelled_mid_spike_leaves_nothing_behind(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """Cancelled while the workers wait on upgrades: slots come back, sockets close, and
    the same workers serve the next run."""
    connections, first = 10, 3
    async with CountingServer(lambda _: "ok") as server:
        config = write_config(tmp_path, server.url, {"spike": {"connections": connections}})

        def progress(message: str) -> None:
            if message.startswith("spike: ") and "connections in" in message:
                server.gate.clear()

        prober = lenient_prober(pool)
        pids = [w.pid for w in pool.workers]
        task = asyncio.create_task(run(config, prober, progress))
        spike_conns = range(first, first + connections)
        await server.wait_for(lambda: all(server.seen[c] for c in spike_conns))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert prober.registry.open == 0
        server.gate.set()
        again = (await run(config, prober)).result
    assert again.result == RunResultKind.PASSED, again.message
    assert [w.pid for w in pool.workers] == pids


def test_worker_refuses_to_run_on_anything_but_pipes() -> None:
    """Started by hand with stdout on /dev/null, a worker says what it needs, exit 2."""
    done = subprocess.run(
        worker_command("uvloop"),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert done.returncode == 2
    assert "stdout must be a pipe from the daemon" in done.stderr


async def test_held_connections_dropped_on_workers_are_counted(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """Held spike connections that the target drops are counted on the workers too."""
    async with hostile_extra.idle_timeout_server(after=0.3) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 6}, "hold": "1s"},
            welcome={"match": "welcome"},
        )
        r = (await run(config, lenient_prober(pool))).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 6}
    assert r.spike.held_dropped == 6
    assert r.spike.held_drop_example == "the peer closed with code 1001 (idle timeout)"


async def test_held_connections_the_workers_budgets_close_are_the_probers_loss(
    tmp_path: Path, pool: WorkerPool
) -> None:
    """A worker's own receive budget closing its held connections is counted apart
    (held_lost_to_prober) and makes the run invalid, not a target's held drop."""
    async with hostile_extra.budget_buster_server(after=0.3) as server:
        config = write_config(
            tmp_path,
            server.url,
            {"spike": {"connections": 6}, "hold": "1s"},
            welcome={"match": "welcome"},
        )
        prober = make_prober(
            pool=pool, lag=10.0, lateness=10.0, cpu=1e6, receive_budget_bytes=65_536
        )
        r = (await run(config, prober)).result
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 6}
    assert (r.spike.held_dropped, r.spike.held_lost_to_prober) == (0, 6)
    assert r.result == RunResultKind.INVALID, r.message
    assert "6 held spike connection(s) lost to the prober's receive buffers" in r.prober.reasons[0]
