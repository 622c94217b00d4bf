"""How fast the daemon answers over a large run history (issue 14): 10,000 stored runs.

    python bench/history.py [--runs 10000] [--requests 200]

Fills a run history in a temporary directory with ``--runs`` runs (each with a detail
and a timeline the size a real run's has: 5 baseline and 40 recovery probes, a
histogram and a 256-attempt sample), starts the real daemon on it (``spikewatch run``,
127.0.0.1, no run ever due), and times ``--requests`` answers of each: a page of 50 runs,
the same filtered by target and result, the next page by cursor, one run's JSON, one
run's page and one pair's page. Prints the median, p95 and max of each, in ms, measured
from a client on the same machine (so they include aiohttp's client and the loopback).
The goal: a page of 50 runs under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from spikewatch.core.timeline import HANDSHAKE_EDGES
from spikewatch.daemon.run_store import RunStore

TARGETS = ("chat-a", "chat-b", "chat-c", "chat-d")
SCENARIOS = ("burst", "ramp")
RESULTS = ("passed", "passed", "passed", "failed", "target_down")


def run_doc(n: int, rng: random.Random) -> dict[str, Any]:
    """Return a stored run's document the size a real one has."""
    target, scenario = TARGETS[n % len(TARGETS)], SCENARIOS[n % len(SCENARIOS)]
    result = RESULTS[n % len(RESULTS)]
    b = 0.004 + rng.random() * 0.002
    probes = [
        {"phase": "baseline", "at": i * 0.5, "latency": b * rng.uniform(0.8, 1.2), "outcome": "ok"}
        for i in range(5)
    ]
    probes += [
        {
            "phase": "recovery",
            "at": 4.0 + i * 0.5,
            "latency": None if i < 3 else b * rng.uniform(0.8, 8),
            "outcome": "timeout" if i < 3 else "ok",
        }
        for i in range(40)
    ]
    counts = [rng.randrange(0, 200) for _ in range(len(HANDSHAKE_EDGES) + 1)]
    return {
        "id": f"run{n:08d}",
        "target": target,
        "scenario": scenario,
        "result": result,
        "message": "" if result == "passed" else "missed: success_ratio",
        "started_at": "2026-11-24T10:00:00.000Z",
        "duration_seconds": 24.5,
        "baseline": {"probes": 5, "ok": 5, "outcomes": {"ok": 5}, "latency_seconds": b},
        "spike": {"attempted": 1000, "outcomes": {"ok": 990, "timeout": 10}, "success_ratio": 0.99},
        "stable": None,
        "recovery": {"recovered": True, "seconds": 2.5, "probes": 40, "outcomes": {"ok": 37},
                     "good_latency_limit_seconds": b * 1.2 + 0.005, "timeout_seconds": 120.0},
        "thresholds": [{"name": "success_ratio", "limit": 0.99, "value": 0.99, "passed": True}],
        "prober": {"saturated": False, "loop_lag_p99_seconds": 0.002, "cpu_percent": 40.0,
                   "rss_bytes": 60_000_000, "reasons": []},
        "errors": [{"outcome": "timeout", "count": 10, "example": "no upgrade answer within 5s",
                    "phase": "spike", "step": "upgrade"}],
        "state": "done",
        "trigger": "schedule",
        "detail": {
            "upgrade_statuses": {},
            "timeline_seconds": {"baseline_start": 0.0, "spike_start": 2.6, "t0": 4.0},
            "timeline": {
                "probes": probes,
                "probes_left_out": 0,
                "batch_starts": [2.6 + i * 0.1 for i in range(10)],
                "batches": 10,
                "t0": 4.0,
                "recovered_at": 6.5,
                "good_latency_limit_seconds": b * 1.2 + 0.005,
                "stable": {"dropped": 0, "drops_at": [], "keepalive_rtt_seconds": None},
                "spike_handshake": {
                    "measured": 990,
                    "failed": 10,
                    "histogram": {"edges_seconds": list(HANDSHAKE_EDGES), "counts": counts},
                    "sample": [[2.6 + i * 0.004, rng.uniform(0.001, 0.05)] for i in range(256)],
                },
            },
        },
    }  # fmt: skip


def fill(path: Path, runs: int) -> tuple[float, float]:
    """Write ``runs`` runs through the store; return the median and p99 write time (ms)."""
    store = RunStore(path, max_runs=max(runs, 10_000), max_age=365 * 86400.0)
    rng = random.Random(14)
    now = time.time() - runs
    times = []
    try:
        for n in range(runs):
            start = time.perf_counter()
            store.put(run_doc(n, rng), now + n)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        store.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99)]


def free_port() -> int:
    """Return a port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(session: aiohttp.ClientSession, base: str, within: float) -> None:
    """Wait until the daemon answers /readyz 200."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(base + "/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit("the daemon did not get ready within 30 s")


async def timed(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    """Return ``n`` answer times (ms) of GET ``url``, each read whole and checked 200."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


async def measure(base: str, requests: int) -> dict[str, list[float]]:
    """Time each kind of answer."""
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, base, 30)
        async with session.get(base + "/api/v1/runs?limit=50") as resp:
            first = await resp.json()
        cursor = first["next_cursor"]
        some = first["runs"][7]["id"]
        urls = {
            "page of 50": "/api/v1/runs?limit=50",
            "page of 50, target+result": "/api/v1/runs?limit=50&target=chat-c&result=failed",
            "next page (cursor)": f"/api/v1/runs?limit=50&cursor={cursor}",
            "one run's JSON": f"/api/v1/runs/{some}",
            "one run's page": f"/runs/{some}",
            "a pair's page (100 runs)": "/targets/chat-b/ramp",
        }
        out = {}
        for name, path in urls.items():
            await timed(session, base + path, 5)  # warm up
            out[name] = await timed(session, base + path, requests)
        return out


def main() -> None:
    """Fill, serve, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spikewatch-history-") as tmp:
        state = Path(tmp) / "state"
        started = time.perf_counter()
        w50, w99 = fill(state, args.runs)
        filled = time.perf_counter() - started
        size = sum(f.stat().st_size for f in state.iterdir()) / 1e6
        print(f"{args.runs} runs written in {filled:.1f} s ({size:.1f} MB on disk);"
              f" a write: median {w50:.2f} ms, p99 {w99:.2f} ms")  # fmt: skip
        port = free_port()
        config = Path(tmp) / "c.yaml"
        config.write_text(json.dumps({
            "server": {"listen": f"127.0.0.1:{port}"},
            "log": {"level": "warning"},
            "storage": {"path": str(state), "retention": {"max_runs": max(args.runs, 10_000)}},
            "targets": [{"name": t, "url": "ws://127.0.0.1:9/ws"} for t in TARGETS],
            "scenarios": [
                {"name": s, "schedule": {"cron": "0 0 1 1 *"}, "spike": {"connections": 10}}
                for s in SCENARIOS
            ],
        }))  # fmt: skip
        proc = asyncio.run(_serve_and_measure(config, port, args.requests))
        for name, times in proc.items():
            p95 = times[int(len(times) * 0.95)]
            print(f"{name:28} median {statistics.median(times):6.2f} ms"
                  f"  p95 {p95:6.2f} ms  max {times[-1]:6.2f} ms")  # fmt: skip
        page = statistics.median(proc["page of 50"])
        print(f"goal: a page of 50 runs < 50 ms: {'met' if page < 50 else 'MISSED'}")


async def _serve_and_measure(config: Path, port: int, requests: int) -> dict[str, list[float]]:
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spikewatch", "run", "--config", str(config),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        return await measure(f"http://127.0.0.1:{port}", requests)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(daemon.wait(), 15)
        except TimeoutError:
            daemon.kill()
            await daemon.wait()


if __name__ == "__main__":
    main()
