"""Soak the daemon: hundreds of scheduled runs, then compare its RSS, fds and tasks at rest.

``python bench/soak.py [--runs 300] [--interval 1] [--warmup 200] [--json out.json]``

It starts two reference targets (``spikewatch target``, one plain, one that wants a JWT),
a hostile target (``bench/hostile_target.py``: each connection meets the next of issue
12's attacks in turn, a ping flood that never reads, endless empty fragments, an
unfinished message near ``max_message_bytes``, a peer that never reads, a close frame
with junk, with healthy answers between them) and the daemon (``spikewatch run``) as
processes on 127.0.0.1, with six target-scenario pairs on a fast schedule: an avalanche
and a ramp with stable connections, JWTs sent as a header and as a query parameter, a
target whose port refuses every connection, and the hostile target.
Meanwhile both targets are degraded in turn through their ``/degrade`` and ``/reset``
endpoints (capacity limits, upgrades slower than the handshake timeout, bursts that drop
stable connections, no welcome, a rotated JWT key), so that runs also fail, go
``target_down`` and get aborted.

The measurement, so that both ends describe the same state:

1. warm-up: ``--warmup`` runs (the default fills the daemon's ring of 200 past runs,
   whose growth is bounded and by design);
2. pause: the config is rewritten with a schedule that never fires soon and reloaded
   (SIGHUP); once every pair is idle and no connection is open, the daemon is sampled:
   RSS and open fds (psutil, on the daemon's pid), the tasks of its event loop
   (``spikewatch_event_loop_tasks``) and its connection slots in use
   (``spikewatch_open_connections``);
3. ``--runs`` runs on the fast schedule again (reload), then pause and sample again;
4. SIGTERM: the daemon must exit 0.

Goals (from the issues): RSS growth below 10 MB, no more fds and no more tasks at the
end than at the start, no slot in use at either sample (slots flat at 0), and a clean
exit without a traceback. The exit status is 0 when
every goal holds, 1 when one does not (each is named), 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml
from prometheus_client.parser import text_string_to_metric_families

#: The issue's goals.
MAX_RSS_GROWTH = 10 * 2**20
#: Bounds: a soak never runs away, whatever its arguments.
MAX_RUNS = 5000
MIN_INTERVAL = 0.2
HTTP_TIMEOUT = 10.0
START_TIMEOUT = 30.0
#: A pause waits this long at most for the runs in flight to finish.
IDLE_TIMEOUT = 60.0
#: Samples taken at rest, a little apart; a leak shows in every one of them.
REST_SAMPLES = 5
#: A schedule that does not fire during a soak (the next 29 February at midnight).
PAUSED = {"cron": "0 0 29 2 *"}
JWT_AUDIENCE = "soak"
#: The start-up lines that give the daemon's and the targets' addresses.
_LISTENING = re.compile(r"listening on (http://[^\s,\"]+)")
_SERVING = re.compile(r"serving (ws://[^\s,\"]+)")
LOOPBACK = "127.0.0.1"
#: The hostile target, and the max_message_bytes its unfinished messages come close to.
HOSTILE_TARGET = Path(__file__).resolve().parent / "hostile_target.py"
HOSTILE_MESSAGE_BYTES = 256 * 1024


class SoakError(Exception):
    """The soak could not run (a process did not start, an endpoint did not answer)."""


# --- processes ---------------------------------------------------------------------------


class Child:
    """A spikewatch process (or another Python script: ``script``) whose stderr is drained
    by a thread, keeping the last lines."""

    def __init__(self, name: str, args: list[str], script: Path | None = None) -> None:
        self.name = name
        program = ["-m", "spikewatch"] if script is None else [str(script)]
        self.proc = subprocess.Popen(  # noqa: S603 - our own command line, no shell
            [sys.executable, *program, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
            errors="replace",
        )
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.tracebacks = 0
        self.errors = 0
        #: The first traceback's lines (and the log line before it), for the report.
        self.traceback_lines: list[str] = []
        self._first_traceback_done = False
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name=f"{name} stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.rstrip("\n")
            with self._changed:
                if line.startswith("Traceback"):
                    self.tracebacks += 1
                    if self.tracebacks == 1:  # the first, with the log line that led to it
                        self.traceback_lines.extend([*list(self.tail)[-1:], line])
                elif self.tracebacks == 1 and not self._first_traceback_done:
                    self.traceback_lines.append(line)
                    # Frames are indented; the exception's own line is not, and ends it.
                    self._first_traceback_done = not line.startswith(" ")
                self.tail.append(line)
                self.errors += " ERROR " in line
                if len(self._lines) < 100:  # start-up lines only; the tail keeps the rest
                    self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Return the first early stderr line for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise SoakError(f"{self.name} did not start:\n" + "\n".join(self.tail))
                self._changed.wait(left)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, then wait; SIGKILL past ``timeout``. Return the exit status (None: killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._thread.join(5)
        return code


@contextmanager
def child(name: str, args: list[str], script: Path | None = None) -> Iterator[Child]:
    process = Child(name, args, script)
    try:
        yield process
    finally:
        process.stop(10)


def start_target(stack: ExitStack, name: str, *extra: str) -> tuple[str, str]:
    """Start a reference target on a free loopback port; return its ws:// and http:// URLs."""
    process = stack.enter_context(
        child(name, ["target", "--listen", f"{LOOPBACK}:0", "--path", "/ws", *extra])
    )
    line = process.wait_for_line(lambda text: _SERVING.search(text) is not None, START_TIMEOUT)
    serving = _SERVING.search(line)
    assert serving is not None
    url = serving.group(1)
    http = url.replace("ws://", "http://", 1).removesuffix("/ws")
    return url, http


def start_hostile_target(stack: ExitStack) -> tuple[str, Child]:
    """Start the hostile target on a free loopback port; return its ws:// URL and process."""
    args = ["--listen", f"{LOOPBACK}:0", "--message-bytes", str(HOSTILE_MESSAGE_BYTES)]
    process = stack.enter_context(child("hostile target", args, HOSTILE_TARGET))
    line = process.wait_for_line(lambda text: _SERVING.search(text) is not None, START_TIMEOUT)
    serving = _SERVING.search(line)
    assert serving is not None
    return serving.group(1), process


def refusing_url() -> str:
    """Return a ws:// URL on a loopback port that nothing listens on (refused)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
    return f"ws://{LOOPBACK}:{port}/ws"


# --- HTTP ---------------------------------------------------------------------------------


def http(method: str, url: str, body: object = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Connection", "close")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
        return bytes(answer.read())


def scrape(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Return the daemon's samples by name: [(labels, value), ...]."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
    for family in text_string_to_metric_families(http("GET", base + "/metrics").decode()):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, int]:
    totals: dict[str, int] = collections.Counter()
    for labels, value in samples:
        totals[labels[label]] += int(value)
    return dict(totals)


def single(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    [(_, value)] = samples[name]
    return value


# --- the config ---------------------------------------------------------------------------


def soak_config(
    plain: str,
    jwt: str,
    refused: str,
    hostile: str,
    *,
    secret_file: Path,
    schedule: dict[str, Any],
) -> dict[str, Any]:
    """Return the daemon's config: six pairs, fast timeouts, the given schedule."""
    welcome = {"match": r'"type":\s*"welcome"', "timeout": "500ms"}
    echo = {"payload": '{"type":"ping","seq":{seq}}', "match": '"seq":{seq}', "timeout": "500ms"}

    def target(name: str, url: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "url": url, "handshake_timeout": "1s", "welcome": welcome, **extra}

    def auth(send_as: str) -> dict[str, Any]:
        claims = {"sub": "soak-{conn}", "aud": JWT_AUDIENCE}
        jwt_config = {"secret_file": str(secret_file), "claims": claims, "send_as": send_as}
        return {"jwt": {"algorithm": "HS256", "ttl": "1m", **jwt_config}}

    quick = {
        "schedule": schedule,
        "baseline": {"probes": 2, "interval": "20ms"},
        "recovery": {
            # A divisor of the 1 s timeout on purpose: a slot falls right on the deadline
            # (tests/engine/test_runner.py keeps the runner from probing it).
            "probe_interval": "50ms",
            "consecutive": 2,
            "tolerance": 1.0,
            "slack": "20ms",
            "timeout": "1s",
        },
    }
    return {
        "server": {"listen": f"{LOOPBACK}:0"},
        "limits": {"max_connections": 64, "max_concurrent_runs": 2},
        "log": {"format": "text", "level": "info"},
        "targets": [
            target("plain", plain, echo=echo),
            target("jwt-header", jwt, auth=auth("header")),
            target("jwt-query", jwt, echo=echo, auth=auth("query:access_token")),
            target("refused", refused),
            target(
                "hostile",
                hostile,
                close_timeout="500ms",
                max_message_bytes=HOSTILE_MESSAGE_BYTES,
            ),
        ],
        "scenarios": [
            {
                "name": "avalanche",
                "targets": ["plain", "jwt-header", "refused", "hostile"],
                "spike": {"connections": 6, "batches": 2, "batch_interval": "50ms"},
                "thresholds": {"success_ratio": 0.9, "handshake_p95": "500ms"},
                "abort": {"error_ratio": 0.5, "min_attempts": 3},
                **quick,
            },
            {
                "name": "steady",
                "targets": ["plain", "jwt-query"],
                "ramp": {"steps": [2, 3], "step_interval": "50ms"},
                "hold": "50ms",
                "stable": {"connections": 3, "ping_interval": "50ms", "timeout": "500ms"},
                "thresholds": {"dropped_stable": 0},
                **quick,
            },
        ],
    }


def write_config(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: a reload must never read half a file."""
    staging = path.with_suffix(".tmp")
    staging.write_text(yaml.safe_dump(document), encoding="utf-8")
    staging.replace(path)


# --- degrading the targets ----------------------------------------------------------------

#: Knob overrides applied in turn, each for one period, with a reset between them.
PLAIN_MODES: tuple[dict[str, object], ...] = (
    {"capacity": 3},  # spike upgrades answered 503: failed or aborted runs
    {"handshake_delay": 1.5},  # slower than handshake_timeout: timeouts, target_down
    {  # bursts: slow upgrades for a while, stable connections dropped (1012)
        "burst_threshold": 4,
        "burst_window": 0.2,
        "recovery_delay": 0.3,
        "slow_delay": 0.05,
        "drop_on_burst": True,
    },
    {"welcome": False},  # the welcome never comes: timeouts
)
JWT_MODES: tuple[dict[str, object], ...] = (
    {"jwt_key": "rotated-" + secrets.token_hex(16)},  # every token refused: 401
    {"capacity": 4},
)


class Degrader:
    """Cycle the targets through their degraded modes in a thread until stopped."""

    def __init__(self, targets: list[tuple[str, tuple[dict[str, object], ...]]], period: float):
        self._targets = targets
        self._period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.failures: list[str] = []

    def __enter__(self) -> Degrader:
        self._stop.clear()
        self._thread = threading.Thread(target=self._cycle, name="degrader", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(HTTP_TIMEOUT * 2)
        for base, _ in self._targets:
            self._post(base + "/reset", None)

    def _post(self, url: str, body: object) -> None:
        try:
            http("POST", url, {} if body is None else body)
        except urllib.error.HTTPError as exc:
            self.failures.append(f"POST {url} {body}: {exc}: {exc.read().decode(errors='replace')}")
        except OSError as exc:
            self.failures.append(f"POST {url} {body}: {exc}")

    def _cycle(self) -> None:
        step = 0
        while not self._stop.wait(self._period):
            for base, modes in self._targets:
                # Odd steps reset, even steps degrade: half of the time each target is fine.
                if step % 2:
                    self._post(base + "/reset", None)
                else:
                    self._post(base + "/degrade", modes[(step // 2) % len(modes)])
                    self.applied += 1
            step += 1


# --- the soak -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The daemon at rest."""

    rss_bytes: int
    open_fds: int
    event_loop_tasks: int
    #: The most slots in use (``spikewatch_open_connections``) in any of the samples.
    open_connections: int
    runs_total: int


class Soak:
    """The daemon under soak: its process, its config file, and how to pause and resume it."""

    def __init__(self, daemon: Child, base: str, config: Path, fast: dict[str, Any]) -> None:
        self.daemon = daemon
        self.base = base
        self.config = config
        self.fast = fast
        self.process = psutil.Process(daemon.proc.pid)
        self.reloads = 0
        self.peak_rss = 0

    def runs(self, target: str | None = None) -> dict[str, int]:
        """Return the runs so far by result, of every target or of ``target``."""
        samples = scrape(self.base)["spikewatch_runs_total"]
        if target is not None:
            samples = [(labels, v) for labels, v in samples if labels["target"] == target]
        return by_label(samples, "result")

    def total_runs(self) -> int:
        return sum(self.runs().values())

    def alive(self) -> None:
        if self.daemon.proc.poll() is not None:
            tail = "\n".join(self.daemon.tail)
            raise SoakError(f"the daemon exited with {self.daemon.proc.returncode}:\n{tail}")

    def reload(self, schedule: dict[str, Any]) -> None:
        """Rewrite the config with ``schedule`` for every scenario and SIGHUP; wait until loaded."""
        name = "spikewatch_config_last_reload_success_timestamp_seconds"
        before = single(scrape(self.base), name)
        document = {**self.fast}
        document["scenarios"] = [{**s, "schedule": schedule} for s in self.fast["scenarios"]]
        write_config(self.config, document)
        self.daemon.proc.send_signal(signal.SIGHUP)
        self.reloads += 1
        deadline = time.monotonic() + START_TIMEOUT
        while single(scrape(self.base), name) <= before:
            self.alive()
            if time.monotonic() > deadline:
                raise SoakError("the daemon did not reload its config (SIGHUP)")
            time.sleep(0.05)

    def run_until(self, total: int, deadline: float) -> None:
        """Wait until ``total`` runs have finished, sampling the RSS on the way."""
        while (done := self.total_runs()) < total:
            self.alive()
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            if time.monotonic() > deadline:
                raise SoakError(f"timed out after {done} of {total} runs")
            time.sleep(0.25)

    def wait_idle(self) -> None:
        """Wait until no pair is queued or running and no connection is open.

        Connections still open with every pair idle past IDLE_TIMEOUT are leaked slots:
        the samples then show them and :func:`judge` names them.
        """
        deadline = time.monotonic() + IDLE_TIMEOUT
        calm = 0
        while calm < 2:  # twice in a row, so that a run about to be queued is not missed
            self.alive()
            pairs = json.loads(http("GET", self.base + "/api/v1/targets"))["pairs"]
            busy = [p for p in pairs if p["state"] != "idle"]
            open_now = single(scrape(self.base), "spikewatch_open_connections")
            calm = calm + 1 if not busy and open_now == 0 else 0
            if time.monotonic() > deadline:
                if busy:
                    raise SoakError(f"runs still in flight after {IDLE_TIMEOUT:g}s: {busy}")
                return
            time.sleep(0.2)

    def sample(self) -> Sample:
        """Sample the daemon at rest several times; keep the lowest fds and tasks, median RSS.

        A leak stays in every sample; the minimum drops what a scrape's own connection
        holds for a moment.
        """
        rss, fds, tasks, slots = [], [], [], []
        for _ in range(REST_SAMPLES):
            rss.append(self.process.memory_info().rss)
            fds.append(self.process.num_fds())
            samples = scrape(self.base)
            tasks.append(int(single(samples, "spikewatch_event_loop_tasks")))
            slots.append(int(single(samples, "spikewatch_open_connections")))
            time.sleep(0.1)
        return Sample(
            rss_bytes=int(statistics.median(rss)),
            open_fds=min(fds),
            event_loop_tasks=min(tasks),
            open_connections=max(slots),
            runs_total=self.total_runs(),
        )


def machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the soak; return its report (goals judged by :func:`judge`)."""
    started = time.monotonic()
    deadline = started + args.timeout
    secret = secrets.token_hex(16)
    secret_file = workdir / "jwt-secret"
    secret_file.write_text(secret + "\n", encoding="utf-8")
    with ExitStack() as stack:
        plain_url, plain_http = start_target(stack, "plain target")
        jwt_url, jwt_http = start_target(
            stack,
            "jwt target",
            "--jwt-secret-file",
            str(secret_file),
            "--jwt-audience",
            JWT_AUDIENCE,
        )
        fast_schedule = {"every": args.interval}
        hostile_url, hostile = start_hostile_target(stack)
        fast = soak_config(
            plain_url,
            jwt_url,
            refusing_url(),
            hostile_url,
            secret_file=secret_file,
            schedule=fast_schedule,
        )
        config = workdir / "spikewatch.yaml"
        write_config(config, fast)
        daemon = stack.enter_context(child("daemon", ["run", "--config", str(config)]))
        line = daemon.wait_for_line(lambda text: _LISTENING.search(text) is not None, START_TIMEOUT)
        listening = _LISTENING.search(line)
        assert listening is not None
        base = listening.group(1)
        run = Soak(daemon, base, config, fast)
        period = max(2 * args.interval, 1.0)
        degrader = Degrader([(plain_http, PLAIN_MODES), (jwt_http, JWT_MODES)], period)

        print(f"== warm-up: {args.warmup} runs", file=sys.stderr)
        with degrader:
            run.run_until(args.warmup, deadline)
        run.reload(PAUSED)
        run.wait_idle()
        start = run.sample()
        runs_before = run.runs()
        hostile_before = run.runs("hostile")
        skipped_before = by_label(scrape(base)["spikewatch_runs_skipped_total"], "reason")
        print(f"== at rest: {start}", file=sys.stderr)

        print(f"== soak: {args.runs} runs", file=sys.stderr)
        measured_from = time.monotonic()
        run.reload(fast_schedule)
        with degrader:
            run.run_until(start.runs_total + args.runs, deadline)
        run.reload(PAUSED)
        run.wait_idle()
        measured_seconds = time.monotonic() - measured_from
        end = run.sample()
        print(f"== at rest: {end}", file=sys.stderr)
        runs_after = run.runs()
        hostile_after = run.runs("hostile")
        skipped_after = by_label(scrape(base)["spikewatch_runs_skipped_total"], "reason")

        exit_status = daemon.stop(15)
        hostile.stop(10)
    results = {k: runs_after[k] - runs_before.get(k, 0) for k in runs_after}
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {"runs": args.runs, "warmup": args.warmup, "interval": args.interval},
        "pairs": 6,
        "runs": {
            "done": end.runs_total - start.runs_total,
            "by_result": {k: v for k, v in sorted(results.items()) if v},
            "skipped": {
                k: v - skipped_before.get(k, 0)
                for k, v in sorted(skipped_after.items())
                if v - skipped_before.get(k, 0)
            },
            "seconds": round(measured_seconds, 1),
        },
        "start": asdict(start),
        "end": asdict(end),
        "growth": {
            "rss_bytes": end.rss_bytes - start.rss_bytes,
            "open_fds": end.open_fds - start.open_fds,
            "event_loop_tasks": end.event_loop_tasks - start.event_loop_tasks,
        },
        "peak_rss_bytes": max(run.peak_rss, start.rss_bytes, end.rss_bytes),
        "reloads": run.reloads,
        "degradations": degrader.applied,
        "degrade_failures": degrader.failures[:5],
        "daemon": {
            "exit_status": exit_status,
            "tracebacks": daemon.tracebacks,
            "error_lines": daemon.errors,
            "stderr_tail": list(daemon.tail)[-10:],
            "first_traceback": daemon.traceback_lines,
        },
        "hostile_target": list(hostile.tail)[-1:],
        "hostile_runs": {
            k: v - hostile_before.get(k, 0)
            for k, v in sorted(hostile_after.items())
            if v - hostile_before.get(k, 0)
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def judge(report: dict[str, Any]) -> list[str]:
    """Return the goals that were not met, each in one line ([] when all hold)."""
    missed = []
    growth = report["growth"]
    if growth["rss_bytes"] >= MAX_RSS_GROWTH:
        missed.append(f"RSS grew by {growth['rss_bytes'] / 2**20:.1f} MB (goal: < 10 MB)")
    if growth["open_fds"] > 0:
        missed.append(f"open fds grew by {growth['open_fds']} (goal: no growth)")
    if growth["event_loop_tasks"] > 0:
        missed.append(f"event-loop tasks grew by {growth['event_loop_tasks']} (goal: no growth)")
    slots = {report[when]["open_connections"] for when in ("start", "end")}
    if slots != {0}:
        missed.append(
            f"slots in use at rest: {report['start']['open_connections']} at the start, "
            f"{report['end']['open_connections']} at the end (goal: 0)"
        )
    daemon = report["daemon"]
    if daemon["exit_status"] != 0:
        missed.append(f"the daemon exited with {daemon['exit_status']} on SIGTERM (goal: 0)")
    if daemon["tracebacks"]:
        first = "\n    ".join(daemon.get("first_traceback", []))
        missed.append(
            f"the daemon printed {daemon['tracebacks']} traceback(s), the first:\n    {first}"
        )
    if report["degrade_failures"]:
        missed.append(f"degrading the targets failed: {report['degrade_failures'][0]}")
    return missed


def summary(report: dict[str, Any]) -> str:
    start, end, growth = report["start"], report["end"], report["growth"]
    mb = 2**20
    runs = report["runs"]
    by_result = ", ".join(f"{k} {v}" for k, v in runs["by_result"].items())
    skipped = ", ".join(f"{k} {v}" for k, v in runs["skipped"].items()) or "none"
    lines = [
        f"runs: {runs['done']} in {runs['seconds']}s over {report['pairs']} pairs ({by_result})",
        f"skipped: {skipped}; degradations: {report['degradations']}; reloads: {report['reloads']}",
        "hostile pair: "
        + (", ".join(f"{k} {v}" for k, v in report.get("hostile_runs", {}).items()) or "no run"),
        f"{'':<18}{'start':>10}{'end':>10}{'growth':>10}",
        f"{'RSS (MB)':<18}{start['rss_bytes'] / mb:>10.1f}{end['rss_bytes'] / mb:>10.1f}"
        f"{growth['rss_bytes'] / mb:>+10.1f}",
        f"{'open fds':<18}{start['open_fds']:>10}{end['open_fds']:>10}{growth['open_fds']:>+10}",
        f"{'event-loop tasks':<18}{start['event_loop_tasks']:>10}{end['event_loop_tasks']:>10}"
        f"{growth['event_loop_tasks']:>+10}",
        f"{'slots in use':<18}{start['open_connections']:>10}{end['open_connections']:>10}"
        f"{end['open_connections'] - start['open_connections']:>+10}",
        f"peak RSS: {report['peak_rss_bytes'] / mb:.1f} MB; daemon exit status "
        f"{report['daemon']['exit_status']}, {report['daemon']['error_lines']} ERROR line(s)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=300, help="runs measured (default 300)")
    parser.add_argument(
        "--warmup", type=int, default=200, help="runs before the first sample (default 200)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between runs of a pair (default 1)"
    )
    parser.add_argument("--timeout", type=float, help="give up after this many seconds")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= MAX_RUNS or not 0 <= args.warmup <= MAX_RUNS:
        parser.error(f"--runs must be 1 to {MAX_RUNS} and --warmup 0 to {MAX_RUNS}")
    if args.interval < MIN_INTERVAL:
        parser.error(f"--interval must be at least {MIN_INTERVAL}")
    if args.timeout is None:
        # Six pairs due every interval, two at a time: about 3 runs per interval is
        # normal; a third of that still finishes.
        args.timeout = 120 + (args.runs + args.warmup) * args.interval
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="spikewatch-soak-") as workdir:
            report = soak(args, Path(workdir))
    except (SoakError, OSError) as exc:
        print(f"soak: cannot run: {exc}", file=sys.stderr)
        return 2
    missed = judge(report)
    report["goals_met"] = not missed
    report["goals_missed"] = missed
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(summary(report))
    if missed:
        print("soak: goals NOT met:\n" + "\n".join(f"  - {m}" for m in missed), file=sys.stderr)
        return 1
    print("soak: goals met (RSS growth < 10 MB, no fd or task growth, slots at 0, clean exit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
