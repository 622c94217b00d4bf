"""Does ``prober.workers`` let one daemon fire a bigger spike? Measure it on this machine.

``python bench/workers.py [--connections 3000] [--workers 1 2] [--rounds 3] [--json out.json]``

It starts a target on 127.0.0.1 (``bench/target.js`` under Node when ``node`` and
``bench/node_modules`` are there, else ``spikewatch target``), then for each round runs
the same avalanche (all connections in one batch, each a full cycle: upgrade, welcome,
one echo, held until T0) through ``spikewatch once --json`` once per worker count, in
alternating order. It prints, per worker count, the median over rounds of:

- **conn/s**: ok connections / (T0 - the spike's planned start): how fast the whole
  avalanche got through, prober and target together;
- **handshake p50 / p95**: connect → upgrade, as the run reports them;
- **lag p99**: the worst event-loop lag p99 of any prober process during the spike;
- **late p99**: the spike's start lateness p99 (actual - planned start);
- **cpu%**: the busiest prober process's CPU share of one core.

Everything runs on this machine: the target competes with the prober for the same
cores, so on a 2-core machine two workers cannot double anything. The figures say what
this machine does; they are not a claim about a bigger one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clients import stop_process  # bench/ is the script's directory, so first on sys.path

BENCH = Path(__file__).resolve().parent
MAX_CONNECTIONS = 5000
MAX_ROUNDS = 10
MAX_WORKERS = 8
#: No single run may take longer than this (seconds).
RUN_TIMEOUT = 180.0
TARGET_START_TIMEOUT = 15.0


class BenchError(Exception):
    """The benchmark cannot run or did not produce figures."""


def _wait_for_line(process: subprocess.Popen[str], prefix: str) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + TARGET_START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise BenchError(f"the target exited with status {process.wait()}")
        if prefix in line:
            return line
    raise BenchError(f"the target did not listen within {TARGET_START_TIMEOUT:g}s")


@contextmanager
def target() -> Iterator[tuple[str, str]]:
    """Run a target on 127.0.0.1; yield its ws:// URL and what it is."""
    node = shutil.which("node")
    if node and (BENCH / "node_modules" / "ws").is_dir():
        command = [node, str(BENCH / "target.js"), "0"]
        kind, prefix = "node bench/target.js (ws)", "listening "
    else:
        command = [sys.executable, "-m", "spikewatch", "target", "--listen", "127.0.0.1:0"]
        kind, prefix = "spikewatch target", "ws://"
    process = subprocess.Popen(  # noqa: S603 - fixed command, loopback only
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = _wait_for_line(process, prefix)
        if prefix == "listening ":
            url = f"ws://127.0.0.1:{int(line.split()[1])}/"
        else:
            url = line[line.index("ws://") :].split()[0]
        yield url, kind
    finally:
        stop_process(process)


def write_config(folder: Path, url: str, connections: int, workers: int) -> Path:
    """Write the config of one avalanche with ``workers`` prober processes."""
    document = {
        "limits": {"max_connections": connections + 100},
        # Generous limits: a saturated run still reports every figure we print.
        "prober": {
            "workers": workers,
            "max_loop_lag_p99": "60s",
            "max_start_lateness_p99": "60s",
            "max_cpu_percent": 1000,
        },
        "targets": [
            {
                "name": "bench",
                "url": url,
                "handshake_timeout": "10s",
                "welcome": {"match": r'"type":\s*"welcome"', "timeout": "10s"},
                "echo": {
                    "payload": '{"type":"ping","seq":{seq}}',
                    "match": "ping",
                    "timeout": "10s",
                },
            }
        ],
        "scenarios": [
            {
                "name": "avalanche",
                "spike": {"connections": connections, "batches": 1},
                "baseline": {"probes": 3, "interval": "100ms"},
                "recovery": {
                    "probe_interval": "200ms",
                    "consecutive": 1,
                    "timeout": "2s",
                    "tolerance": 100,
                },
            }
        ],
    }
    path = folder / f"workers-{workers}.json"
    path.write_text(json.dumps(document))  # JSON is YAML
    return path


def run_once(config: Path) -> dict[str, Any]:
    """Run ``spikewatch once --json`` and return the figures of its spike."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and command line
        [
            *(sys.executable, "-m", "spikewatch", "once", "--config", str(config)),
            *("--target", "bench", "--scenario", "avalanche", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise BenchError(f"spikewatch once failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    spike = result["spike"]
    if spike is None:
        raise BenchError(f"no spike was fired: {result['result']}: {result['message']}")
    timeline = result["detail"]["timeline_seconds"]
    ok = spike["outcomes"].get("ok", 0)
    took = timeline["t0"] - timeline["spike_start"]
    worker_lines = [line for line in done.stderr.splitlines() if "] workers: " in line]
    return {
        "result": result["result"],
        "outcomes": spike["outcomes"],
        "conn_per_s": ok / took if took > 0 else None,
        "spike_seconds": took,
        "handshake_p50": spike["handshake_seconds"]["p50"],
        "handshake_p95": spike["handshake_seconds"]["p95"],
        "loop_lag_p99": result["prober"]["loop_lag_p99_seconds"],
        "start_lateness_p99": spike["start_lateness_seconds"]["p99"],
        "cpu_percent": result["prober"]["cpu_percent"],
        "workers_line": worker_lines[-1].split("] ", 1)[1] if worker_lines else None,
    }


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s[key] is not None]
    return statistics.median(values) if values else None


def table(results: dict[int, list[dict[str, Any]]]) -> str:
    """Render the medians per worker count."""
    lines = [
        f"{'workers':>7} {'conn/s':>8} {'hs p50':>8} {'hs p95':>8} "
        f"{'lag p99':>8} {'late p99':>8} {'cpu%':>6}  outcomes (last round)"
    ]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}ms"

    for workers, samples in results.items():
        rate = _median(samples, "conn_per_s")
        cpu = _median(samples, "cpu_percent")
        lines.append(
            f"{workers:>7} {'-' if rate is None else f'{rate:.0f}':>8} "
            f"{ms(_median(samples, 'handshake_p50')):>8} "
            f"{ms(_median(samples, 'handshake_p95')):>8} "
            f"{ms(_median(samples, 'loop_lag_p99')):>8} "
            f"{ms(_median(samples, 'start_lateness_p99')):>8} "
            f"{'-' if cpu is None else f'{cpu:.0f}':>6}  {samples[-1]['outcomes']}"
        )
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every sample here")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be 1..{MAX_CONNECTIONS}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}")
    if not all(1 <= w <= MAX_WORKERS for w in args.workers):
        parser.error(f"--workers must be 1..{MAX_WORKERS}")
    return args


def main(argv: list[str]) -> int:
    """Run the benchmark; print the table (and write JSON when asked)."""
    args = _parse(argv)
    results: dict[int, list[dict[str, Any]]] = {w: [] for w in args.workers}
    try:
        with target() as (url, kind), tempfile.TemporaryDirectory() as folder:
            print(
                f"== {args.connections} connections in one batch against {kind}, "
                f"{os.cpu_count()} CPUs, {args.rounds} round(s)",
                file=sys.stderr,
            )
            configs = {w: write_config(Path(folder), url, args.connections, w) for w in results}
            for round_ in range(args.rounds):
                order = args.workers if round_ % 2 == 0 else args.workers[::-1]
                for workers in order:
                    sample = run_once(configs[workers])
                    results[workers].append(sample)
                    print(f"   round {round_ + 1}, workers={workers}: {sample}", file=sys.stderr)
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"bench/workers.py: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({str(w): s for w, s in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
