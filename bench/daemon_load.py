"""The daemon at rest, and its ``/metrics`` with many series.

``python bench/daemon_load.py [--target-port P] [--shapes 20x4 100x10] [--idle-seconds 30]
[--scrapes 200] [--json out.json]``

For each shape TxS it starts the real daemon (``spikewatch run --config``) with T targets
x S scenarios on 127.0.0.1. Every pair runs once (a minimal run: one baseline probe, a
spike of one connection, recovery probes until one is good) against the bench target at
``--target-port`` (without it, no pair runs: the schedules are a cron 12 hours away). Then:

- for the first shape only, the daemon at rest: its CPU (user + system, ``psutil``) over
  ``--idle-seconds`` as a percentage of one core, and its RSS after;
- ``/metrics`` scrape latency: ``--scrapes`` GETs one after another on one keep-alive
  connection, as the text format and as OpenMetrics, timed from the request to the last
  byte of the body (p50, p99, max), with the body's size and its number of samples, and
  the daemon's RSS after each format's scrapes (a deployed daemon is scraped; the bar's
  RSS is the higher of the idle figure and the one after the text scrapes).

Every series of a pair exists from the start (counters and histograms at 0), so the
number of series depends on the shape, not on whether the pairs ran; the runs give the
values and the run history that a real daemon holds.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import os
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import yaml

#: The longest the daemon may take to start, and every pair to finish its one run.
START_TIMEOUT = 60.0
RUNS_TIMEOUT = 180.0
STOP_TIMEOUT = 15.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MAX_PAIRS = 2000
MAX_IDLE_SECONDS = 600
MAX_SCRAPES = 2000
#: Scrapes of one format stop after this many seconds, once MIN_SCRAPES are done.
SCRAPE_BUDGET = 60.0
MIN_SCRAPES = 5
_LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")


class LoadError(Exception):
    """The daemon did not start, did not run every pair, or answered badly."""


def parse_shape(text: str) -> tuple[int, int]:
    """Return (targets, scenarios) of ``TxS``."""
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TARGETSxSCENARIOS, e.g. 20x4")
    shape = int(match.group(1)), int(match.group(2))
    if not (shape[0] >= 1 and shape[1] >= 1 and shape[0] * shape[1] <= MAX_PAIRS):
        raise argparse.ArgumentTypeError(f"{text!r}: need 1..{MAX_PAIRS} pairs")
    return shape


def config_document(
    targets: int, scenarios: int, target_port: int | None, event_loop: str
) -> dict[str, Any]:
    """Return the config of a shape: every pair once soon (with a target), else never soon."""
    if target_port is not None:
        # The first interval run comes within 10 s of the start; the next one in an hour.
        schedule: dict[str, Any] = {"every": "1h"}
        url = f"ws://127.0.0.1:{target_port}/"
    else:
        later = datetime.now(UTC) + timedelta(hours=12)
        schedule = {"cron": f"{later.minute} {later.hour} * * *"}
        url = "ws://127.0.0.1:9/"  # never contacted: no run is due while we measure
    return {
        "server": {"listen": "127.0.0.1:0"},
        "log": {"format": "text", "level": "info"},
        "limits": {"max_connections": 200, "max_concurrent_runs": 4},
        "prober": {"event_loop": event_loop},
        "targets": [
            {
                "name": f"target-{t:03d}",
                "url": url,
                "welcome": {"match": '"type":\\s*"welcome"', "timeout": "2s"},
                "echo": {"payload": '{"type":"ping","seq":{seq}}', "match": "ping"},
            }
            for t in range(targets)
        ],
        "scenarios": [
            {
                "name": f"scenario-{s:02d}",
                "schedule": schedule,
                "spike": {"connections": 1},
                "baseline": {"probes": 1, "interval": 0},
                "recovery": {"probe_interval": "50ms", "consecutive": 1, "timeout": "5s"},
                "thresholds": {"success_ratio": 0.99, "handshake_p95": "1s", "recovery": "5s"},
            }
            for s in range(scenarios)
        ],
    }


class Daemon:
    """``spikewatch run`` as a child process; its log lines are read in a thread."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our daemon
            [sys.executable, "-m", "spikewatch", "run", "--config", str(config)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.address: tuple[str, int] | None = None
        self.event_loop = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match is not None and self.address is None:
                self.address = (match.group(1), int(match.group(2)))
                loop = re.search(r"event loop (\w+)", line)
                self.event_loop = loop.group(1) if loop else ""
                self._listening.set()
        self._listening.set()  # exited: wake the waiter

    def count(self, needle: str) -> int:
        """Return how many log lines so far contain ``needle``."""
        return sum(needle in line for line in list(self.lines))

    def wait_listening(self) -> tuple[str, int]:
        """Return the HTTP address once the daemon logs it; raise if it exits or stalls."""
        self._listening.wait(START_TIMEOUT)
        if self.address is None:
            self.stop()
            raise LoadError("the daemon did not start:\n" + "\n".join(self.lines[-20:]))
        return self.address

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode


class Scraper:
    """GET ``/metrics`` over one keep-alive HTTP/1.1 connection."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._conn = http.client.HTTPConnection(*address, timeout=120)
        self._path = ""
        self.content_type = ""

    def send(self, path: str, accept: str | None = None) -> None:
        """Send a GET; :meth:`finish` reads its answer."""
        self._conn.request("GET", path, headers={"Accept": accept} if accept else {})
        self._path = path

    def finish(self) -> bytes:
        """Read the answer of the request sent last; raise unless it is 200."""
        response = self._conn.getresponse()
        body = response.read()
        self.content_type = response.getheader("Content-Type", "")
        if response.status != 200:
            raise LoadError(f"GET {self._path} answered {response.status}: {body[:200]!r}")
        return body

    def get(self, path: str, accept: str | None = None) -> tuple[float, bytes]:
        """Return (seconds from request to the body's last byte, body)."""
        start = time.perf_counter()
        self.send(path, accept)
        body = self.finish()
        return time.perf_counter() - start, body

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def _healthz_during_scrape(address: tuple[str, int]) -> float:
    """Return how long ``/healthz`` takes when asked just after a ``/metrics`` request.

    The exposition is rendered on the daemon's event loop: while it renders, every other
    request (and every timestamp a run takes) waits.
    """
    scraper, probe = Scraper(address), Scraper(address)
    try:
        scraper.get("/healthz")
        probe.get("/healthz")
        scraper.send("/metrics")
        time.sleep(0.002)  # let the daemon start rendering
        elapsed, _ = probe.get("/healthz")
        scraper.finish()
    finally:
        scraper.close()
        probe.close()
    return elapsed


def _samples(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max": ordered[-1],
    }


def measure_shape(
    targets: int,
    scenarios: int,
    *,
    target_port: int | None,
    idle_seconds: float,
    scrapes: int,
    event_loop: str,
    scrape_budget: float = SCRAPE_BUDGET,
) -> dict[str, Any]:
    """Start the daemon for one shape and return its figures (see the module docstring)."""
    pairs = targets * scenarios
    with tempfile.TemporaryDirectory(prefix="spikewatch-daemon-load-") as tmp:
        config = Path(tmp) / "config.yaml"
        document = config_document(targets, scenarios, target_port, event_loop)
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        started = time.perf_counter()
        daemon = Daemon(config)
        try:
            address = daemon.wait_listening()
            ready_seconds = time.perf_counter() - started
            process = psutil.Process(daemon.process.pid)
            scraper = Scraper(address)
            ran = 0
            if target_port is not None:
                # Counted from the log ("run finished" per run), not from /metrics: a big
                # exposition takes seconds to render, and polling it would slow the runs.
                deadline = time.monotonic() + RUNS_TIMEOUT
                while (ran := daemon.count("run finished")) < pairs:
                    if time.monotonic() > deadline or daemon.process.poll() is not None:
                        raise LoadError(f"{ran} of {pairs} pairs ran within {RUNS_TIMEOUT:g}s")
                    time.sleep(0.2)  # polling an external process, bounded by the deadline
            figures: dict[str, Any] = {
                "targets": targets,
                "scenarios": scenarios,
                "pairs": pairs,
                "runs_finished": ran,
                "event_loop": daemon.event_loop,
                "ready_seconds": ready_seconds,
            }
            if idle_seconds > 0:
                before, wall = process.cpu_times(), time.perf_counter()
                time.sleep(idle_seconds)  # the measurement: the daemon at rest this long
                after, wall = process.cpu_times(), time.perf_counter() - wall
                cpu = (after.user - before.user) + (after.system - before.system)
                figures["idle"] = {
                    "seconds": wall,
                    "cpu_percent": 100.0 * cpu / wall,
                    "rss_bytes": process.memory_info().rss,
                }
            for name, accept in (("text", None), ("openmetrics", OPENMETRICS)):
                scraper.get("/metrics", accept)  # the first one warms caches; not counted
                latencies: list[float] = []
                body = b""
                budget = time.monotonic() + scrape_budget
                while len(latencies) < scrapes and (
                    len(latencies) < MIN_SCRAPES or time.monotonic() < budget
                ):
                    elapsed, body = scraper.get("/metrics", accept)
                    latencies.append(elapsed)
                figures[f"scrape_{name}"] = {
                    **_quantiles(latencies),
                    "scrapes": len(latencies),
                    "bytes": len(body),
                    "samples": _samples(body),
                    "content_type": scraper.content_type,
                    # RSS once scraped: a deployed daemon is, every 15 s or so, and its
                    # renderings leave a high-water mark the idle figure above lacks.
                    "rss_bytes_after": process.memory_info().rss,
                }
            # How long the loop answers a trivial request while a scrape renders.
            figures["healthz_during_scrape_seconds"] = _healthz_during_scrape(address)
            figures["rss_bytes"] = process.memory_info().rss
            scraper.close()
        finally:
            code = daemon.stop()
    if code != 0:
        raise LoadError(f"the daemon exited {code}:\n" + "\n".join(daemon.lines[-20:]))
    return figures


def profile_render(targets: int, scenarios: int, top: int = 15) -> str:
    """Profile one text exposition of a shape's series, in this process; return the top."""
    import prometheus_client  # noqa: PLC0415 - only when profiling

    from spikewatch.config import parse_config  # noqa: PLC0415
    from spikewatch.daemon.metrics import SpikewatchMetrics  # noqa: PLC0415

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as the daemon
    config = parse_config(config_document(targets, scenarios, None, "auto"))
    metrics = SpikewatchMetrics(version="bench")
    metrics.ensure_pairs(SpikewatchMetrics.config_pairs(config))
    metrics.render(None)
    profiler = cProfile.Profile()
    profiler.enable()
    metrics.render(None)
    profiler.disable()
    out = []

    class _Sink:
        def write(self, text: str) -> None:
            out.append(text)

    pstats.Stats(profiler, stream=_Sink()).sort_stats("cumulative").print_stats(top)  # type: ignore[arg-type]
    return "".join(out)


def table(shapes: list[dict[str, Any]]) -> str:
    """Return the figures as plain-text lines."""
    lines = []
    for f in shapes:
        head = f"{f['targets']} targets x {f['scenarios']} scenarios ({f['pairs']} pairs"
        head += f", {f['runs_finished']} runs, {f['event_loop']})"
        lines.append(head)
        if "idle" in f:
            idle = f["idle"]
            lines.append(
                f"  idle {idle['seconds']:.0f}s: {idle['cpu_percent']:.2f}% of a core, "
                f"RSS {idle['rss_bytes'] / 2**20:.1f} MiB"
            )
        for name in ("text", "openmetrics"):
            s = f[f"scrape_{name}"]
            lines.append(
                f"  /metrics {name}: {s['samples']} samples, {s['bytes'] / 1024:.0f} KiB, "
                f"p50 {s['p50'] * 1e3:.1f} ms, p99 {s['p99'] * 1e3:.1f} ms, "
                f"max {s['max'] * 1e3:.1f} ms over {s['scrapes']}, "
                f"RSS after {s['rss_bytes_after'] / 1e6:.1f} MB"
            )
        lines.append(
            f"  /healthz asked during a scrape: {f['healthz_during_scrape_seconds'] * 1e3:.1f} ms"
        )
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-port", type=int, help="the bench target; each pair runs once")
    parser.add_argument("--shapes", type=parse_shape, nargs="+", default=[(20, 4), (100, 10)])
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--scrapes", type=int, default=200, help="per format, at most")
    parser.add_argument(
        "--scrape-budget", type=float, default=SCRAPE_BUDGET, help="seconds per format, at most"
    )
    parser.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--profile", action="store_true", help="profile one render per shape")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not 0 <= args.idle_seconds <= MAX_IDLE_SECONDS:
        parser.error(f"--idle-seconds: need 0..{MAX_IDLE_SECONDS}")
    if not 1 <= args.scrapes <= MAX_SCRAPES:
        parser.error(f"--scrapes: need 1..{MAX_SCRAPES}")
    return args


def run(
    shapes: list[tuple[int, int]],
    *,
    target_port: int | None,
    idle_seconds: float,
    scrapes: int,
    event_loop: str = "auto",
    scrape_budget: float = SCRAPE_BUDGET,
) -> list[dict[str, Any]]:
    """Measure every shape in turn; only the first one is measured at rest."""
    results = []
    for i, (targets, scenarios) in enumerate(shapes):
        print(f"== daemon {targets}x{scenarios}", file=sys.stderr)
        results.append(
            measure_shape(
                targets,
                scenarios,
                target_port=target_port,
                idle_seconds=idle_seconds if i == 0 else 0.0,
                scrapes=scrapes,
                event_loop=event_loop,
                scrape_budget=scrape_budget,
            )
        )
    return results


def main(argv: list[str]) -> int:
    """Run the daemon load measurements; print them; write the JSON when asked."""
    args = _parse(argv)
    try:
        results = run(
            args.shapes,
            target_port=args.target_port,
            idle_seconds=args.idle_seconds,
            scrapes=args.scrapes,
            event_loop=args.event_loop,
            scrape_budget=args.scrape_budget,
        )
    except (LoadError, OSError) as exc:
        print(f"daemon_load: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    if args.profile:
        for targets, scenarios in args.shapes:
            print(f"== profile of one text render, {targets}x{scenarios}")
            print(profile_render(targets, scenarios))
    if args.json is not None:
        args.json.write_text(json.dumps({"daemon": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
