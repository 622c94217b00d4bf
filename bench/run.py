"""Measure what spikewatch costs next to other WebSocket clients, and how its daemon fares.

``python bench/run.py`` runs every part against one neutral target (``bench/target.js``,
the ``ws`` package on Node) and writes ``bench/results/latest.json``:

- ``cpu``: CPU per connection of each client for a full cycle (connect, upgrade, welcome,
  echo, close), the marginal cost between two burst sizes so that start-up cancels, the
  median over rounds; each burst in a fresh process, clients alternating (A B A B); the
  Python clients on asyncio's loop and on uvloop; Artillery beside them;
- ``rss``: RSS per held connection, the marginal between two numbers of held connections;
- ``avalanche``: spikewatch's real runner firing an avalanche (one batch, and ten smaller
  ones): event-loop lag and spike start lateness, handshake times, rate;
- ``daemon``: the real daemon at rest with 20 targets x 4 scenarios (CPU, RSS), and the
  latency of ``/metrics`` as the number of series grows (``bench/daemon_load.py``);
- ``floor``: how late the last of N bare loopback connects starts when all are planned for
  one instant, from 1 and from ``nproc`` processes (``bench/connect_floor.py``): the
  kernel's floor under the avalanche's start lateness. It runs last, once the target has
  stopped, in its own short-lived processes.

See ``bench/README.md`` for what each figure means and the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import artillery  # bench/ is the script's directory, so first on sys.path
import connect_floor
import daemon_load
from clients import CLIENTS, LOOPS, stop_process

BENCH = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH / "results" / "latest.json"
PARTS = ("cpu", "rss", "avalanche", "daemon", "floor")
ALL_CLIENTS = (*CLIENTS, "artillery")
MAX_SIZE = 5000
MAX_HELD = 15_000
MAX_ROUNDS = 10
MAX_AVALANCHE = 5000
#: No measurement process may take longer than this (seconds); a hung one fails the run.
PROCESS_TIMEOUT = 180.0
TARGET_START_TIMEOUT = 15.0
NPM_CI_TIMEOUT = 600.0
#: fds a process needs beside its connections.
FD_MARGIN = 64

#: The issue's bar: (what, comparison, limit). Checked per event loop where it applies,
#: and only on the sizes the issue names (3,000 in one avalanche, 10,000 held, 20x4).
BAR: dict[str, tuple[str, float]] = {
    "spikewatch CPU/conn vs the floor's, same loop": ("<=", 1.5),
    "aiohttp CPU/conn over spikewatch's, same loop": (">=", 2.5),
    "Artillery CPU/conn over spikewatch's": (">=", 3.0),
    "spikewatch RSS per held connection (KiB), 10,000 held": ("<=", 8.0),
    "avalanche of 3,000 in one batch: loop lag p99 (ms)": ("<=", 10.0),
    "avalanche of 3,000 in one batch: start lateness p99 (ms)": ("<=", 20.0),
    "idle daemon, 20x4: CPU (% of a core)": ("<", 1.0),
    "idle daemon, 20x4: RSS (MB)": ("<", 80.0),
    "idle daemon, 20x4: /metrics scrape p50 (ms)": ("<", 20.0),
}
BAR_AVALANCHE = 3000
BAR_HELD = 10_000
BAR_SHAPE = (20, 4)
#: The bar line beside which the floor (the ``floor`` part) is shown for the same batch.
LATENESS_BAR = "avalanche of 3,000 in one batch: start lateness p99 (ms)"


class BenchError(Exception):
    """The benchmark cannot run or did not produce valid figures."""


# -- tools and the target -----------------------------------------------------------------


def tools() -> tuple[str, str]:
    """Return the paths of node and npm; raise when either is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        raise BenchError(f"the benchmark needs {' and '.join(missing)} on PATH")
    assert node is not None
    assert npm is not None
    return node, npm


def install(npm: str) -> float | None:
    """Run ``npm ci`` when a pinned package is missing; return how long it took (s)."""
    wanted = [BENCH / "node_modules" / "ws", artillery.ARTILLERY]
    if all(path.exists() for path in wanted):
        return None
    print("== npm ci --ignore-scripts (bench/package-lock.json)", file=sys.stderr)
    started = time.perf_counter()
    # --ignore-scripts: Artillery's dependencies' install scripts would fetch a browser
    # (Playwright's Chromium) and build native add-ons that the ws engine does not use.
    subprocess.run(  # noqa: S603 - fixed command, no user input
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=BENCH,
        check=True,
        timeout=NPM_CI_TIMEOUT,
        stdout=sys.stderr,
    )
    return time.perf_counter() - started


@contextmanager
def server_process(argv: list[str], name: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run ``argv``, a server on 127.0.0.1 whose first line is ``listening <port>``; yield
    its port and process once it printed that line, and stop it when the block ends."""
    process = subprocess.Popen(  # noqa: S603 - our own scripts, no user input
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        line = ""
        # readline blocks; the server prints its line at once or dies (EOF), never stalls.
        while not line.startswith("listening ") and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise BenchError(f"{name} exited with status {process.wait()}")
        if not line.startswith("listening "):
            raise BenchError(f"{name} did not listen within {TARGET_START_TIMEOUT:g}s")
        yield int(line.split()[1]), process
    finally:
        stop_process(process)


@contextmanager
def target(node: str) -> Iterator[int]:
    """Run the Node target on 127.0.0.1 (a free port) and yield its port."""
    with server_process([node, str(BENCH / "target.js"), "0"], "the target") as (port, _):
        yield port


def run_script(
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = PROCESS_TIMEOUT,
) -> dict[str, Any]:
    """Run ``bench/<script> args`` in a fresh interpreter (with ``env``, else this one's);
    return its last line's JSON, raising when it exits non-zero or counts failed
    connections."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise BenchError(
            f"{script} {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}"
        )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures.get("failed"):
        raise BenchError(
            f"{script} {' '.join(args)}: {figures['failed']} connections failed, "
            f"e.g. {figures['failures']}"
        )
    return figures


# -- cpu: CPU per connection ----------------------------------------------------------------


def _burst(
    client: str, loop: str, port: int, size: int, *, concurrency: int, node: str, phase: float
) -> dict[str, Any]:
    if client == "artillery":
        try:
            return artillery.measure(node, port, size, phase)
        except artillery.ArtilleryError as exc:
            raise BenchError(str(exc)) from exc
    return run_script(
        "clients.py", "burst", client, str(port), str(size), str(concurrency), "--loop", loop
    )


def _runs(clients: list[str], loops: list[str]) -> list[tuple[str, str]]:
    """Return (client, loop) in measuring order: each loop's clients, Artillery last."""
    order = [(c, loop) for loop in loops for c in clients if c != "artillery"]
    if "artillery" in clients:
        order.append(("artillery", "node"))
    return order


def measure_cpu(
    port: int, node: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], float | None]:
    """Return every burst's figures (A B A B over rounds and sizes) and Artillery's phase."""
    small, big = args.sizes
    phase = artillery.phase_ms([small, big]) if "artillery" in args.clients else 0.0
    runs = _runs(args.clients, args.loops)
    # Warm the target (Node's JIT) so that the first client measured is not penalised.
    _burst("floor", "asyncio", port, small, concurrency=args.concurrency, node=node, phase=phase)
    samples = []
    for round_ in range(args.rounds):
        for size in (small, big):
            for client, loop in runs:  # A B A B: drift hits every client alike
                print(f"== cpu round {round_ + 1} {client}/{loop} x{size}", file=sys.stderr)
                sample = _burst(
                    client,
                    loop,
                    port,
                    size,
                    concurrency=args.concurrency,
                    node=node,
                    phase=phase,
                )
                samples.append({**sample, "round": round_})
    return samples, (phase if "artillery" in args.clients else None)


def summarize_cpu(samples: list[dict[str, Any]], small: int, big: int) -> dict[str, dict[str, Any]]:
    """Return each client/loop's marginal CPU per connection, rate and lag (round medians)."""
    by_key = {(s["client"], s["loop"], s["round"], s["connections"]): s for s in samples}
    keys = sorted({(c, loop) for c, loop, _, _ in by_key}, key=_order)
    rounds = sorted({r for _, _, r, _ in by_key})
    result: dict[str, dict[str, Any]] = {}
    for client, loop in keys:
        marginals, rates, lags = [], [], []
        for r in rounds:
            low, high = by_key[(client, loop, r, small)], by_key[(client, loop, r, big)]
            marginals.append((high["cpu_seconds"] - low["cpu_seconds"]) / (big - small))
            rates.append(big / high["wall_seconds"])
            lag = high.get("loop_lag_seconds", {}).get("p99")
            if lag is not None:
                lags.append(lag)
        result[f"{client}/{loop}"] = {
            "client": client,
            "loop": loop,
            "cpu_per_connection_seconds": statistics.median(marginals),
            "cpu_per_connection_rounds": marginals,
            # Artillery's wall time is mostly its start-up and its reporting; no rate.
            "rate_per_second": statistics.median(rates) if client != "artillery" else None,
            "burst_loop_lag_p99_seconds": statistics.median(lags) if lags else None,
            "rounds": len(rounds),
        }
    return result


def _order(key: tuple[str, str]) -> tuple[int, int]:
    client, loop = key
    loops = [*LOOPS, "node"]
    return loops.index(loop), ALL_CLIENTS.index(client)


def cpu_ratios(result: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Return the ratios that the bar is about, per loop, and across loops."""

    def cpu(client: str, loop: str) -> float | None:
        figures = result.get(f"{client}/{loop}")
        value = figures["cpu_per_connection_seconds"] if figures else None
        return value if value is not None and value > 0 else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b is not None else None

    ratios: dict[str, dict[str, float]] = {}
    for name, (num, den) in {
        "cpu_vs_floor": ("spikewatch", "floor"),
        "aiohttp_over_spikewatch": ("aiohttp", "spikewatch"),
        "websockets_over_spikewatch": ("websockets", "spikewatch"),
    }.items():
        values = {loop: ratio(cpu(num, loop), cpu(den, loop)) for loop in LOOPS}
        ratios[name] = {k: v for k, v in values.items() if v is not None}
    art = cpu("artillery", "node")
    values = {loop: ratio(art, cpu("spikewatch", loop)) for loop in LOOPS}
    ratios["artillery_over_spikewatch"] = {k: v for k, v in values.items() if v is not None}
    cross = {
        "spikewatch/uvloop vs floor/asyncio": ratio(
            cpu("spikewatch", "uvloop"), cpu("floor", "asyncio")
        ),
        "aiohttp/asyncio over spikewatch/uvloop": ratio(
            cpu("aiohttp", "asyncio"), cpu("spikewatch", "uvloop")
        ),
        "aiohttp/uvloop over spikewatch/asyncio": ratio(
            cpu("aiohttp", "uvloop"), cpu("spikewatch", "asyncio")
        ),
    }
    ratios["cross"] = {k: v for k, v in cross.items() if v is not None}
    return ratios


# -- rss: memory per held connection --------------------------------------------------------


def port_range() -> tuple[int, int]:
    """Return the ephemeral port range (``/proc/sys/net/ipv4/ip_local_port_range``)."""
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def check_hold_capacity(big: int) -> None:
    """Raise unless the fd limit and the ephemeral ports allow ``big`` held connections."""
    import resource  # noqa: PLC0415 - Unix only, like the rest of the harness

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if big + FD_MARGIN > hard:
        raise BenchError(f"holding {big} connections needs more than the fd limit ({hard})")
    low, high = port_range()
    if big + FD_MARGIN > high - low + 1:
        raise BenchError(f"holding {big} connections needs more than ports {low}-{high}")


def measure_rss(port: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Return every held measurement's figures (clients alternating, over rounds)."""
    small, big = args.hold_sizes
    check_hold_capacity(big)
    clients = [c for c in args.clients if c != "artillery"]
    samples = []
    for round_ in range(args.hold_rounds):
        for size in (small, big):
            for loop in args.loops:
                for client in clients:
                    print(f"== rss round {round_ + 1} {client}/{loop} x{size}", file=sys.stderr)
                    sample = run_script(
                        "clients.py",
                        "hold",
                        client,
                        str(port),
                        str(size),
                        str(args.concurrency),
                        "--loop",
                        loop,
                    )
                    samples.append({**sample, "round": round_})
    return samples


def summarize_rss(samples: list[dict[str, Any]], small: int, big: int) -> dict[str, Any]:
    """Return each client/loop's RSS per held connection (marginal, median over rounds)."""
    by_key = {(s["client"], s["loop"], s["round"], s["connections"]): s for s in samples}
    keys = sorted({(c, loop) for c, loop, _, _ in by_key}, key=_order)
    rounds = sorted({r for _, _, r, _ in by_key})
    result = {}
    for client, loop in keys:
        marginals = [
            (
                by_key[(client, loop, r, big)]["rss_held_bytes"]
                - by_key[(client, loop, r, small)]["rss_held_bytes"]
            )
            / (big - small)
            for r in rounds
        ]
        held = [by_key[(client, loop, r, big)] for r in rounds]
        result[f"{client}/{loop}"] = {
            "client": client,
            "loop": loop,
            "rss_per_connection_bytes": statistics.median(marginals),
            "rss_per_connection_rounds": marginals,
            "rss_held_bytes": statistics.median(h["rss_held_bytes"] for h in held),
            "held": big,
        }
    return result


# -- avalanche: spikewatch's runner -------------------------------------------------------


def measure_avalanche(port: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the avalanche shapes on each loop; return the figures of each run."""
    n = args.avalanche
    shapes = [(1, 0.0), (args.avalanche_batches, args.avalanche_interval)]
    # One discarded run first: a fresh target answers its first thousands of connections
    # while its JIT warms up, in bursts that show as the prober's loop lag.
    print(f"== avalanche warm-up, {n} in {shapes[1][0]} batches", file=sys.stderr)
    run_script("avalanche.py", str(port), str(n), str(shapes[1][0]), str(shapes[1][1]))
    runs = []
    for round_ in range(args.avalanche_rounds):
        for loop in args.loops:
            for batches, interval in shapes:
                print(
                    f"== avalanche round {round_ + 1} {n} in {batches} batch(es) on {loop}",
                    file=sys.stderr,
                )
                figures = run_script(
                    "avalanche.py", str(port), str(n), str(batches), str(interval), "--loop", loop
                )
                spike = figures["result"]["spike"]
                if spike is None or spike["outcomes"] != {"ok": n}:
                    raise BenchError(
                        f"avalanche x{n} in {batches} on {loop}: not every connection "
                        f"succeeded: {spike and spike['outcomes']}; {figures['result']['errors']}"
                    )
                figures["round"] = round_ + 1
                runs.append(figures)
    return runs


def summarize_avalanche(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the figures of each avalanche run that the table shows."""
    rows = []
    for figures in runs:
        result, spike = figures["result"], figures["result"]["spike"]
        rows.append(
            {
                "round": figures.get("round", 1),
                "loop": figures["loop"],
                "connections": figures["connections"],
                "batches": figures["batches"],
                "batch_interval_seconds": figures["batch_interval"],
                "result": result["result"],
                "message": result["message"],
                "loop_lag_p99_seconds": figures["spike_loop_lag_seconds"]["p99"],
                "loop_lag_max_seconds": figures["spike_loop_lag_seconds"]["max"],
                "start_lateness_p99_seconds": spike["start_lateness_seconds"]["p99"],
                "start_lateness_max_seconds": spike["start_lateness_seconds"]["max"],
                "handshake_p50_seconds": spike["handshake_seconds"]["p50"],
                "handshake_p95_seconds": spike["handshake_seconds"]["p95"],
                "rate_per_second": figures["rate_per_second"],
                "spike_wall_seconds": figures["spike_wall_seconds"],
                "prober_cpu_percent": result["prober"]["cpu_percent"],
            }
        )
    return rows


# -- the machine, the bar and the tables ----------------------------------------------------


def machine(node: str) -> dict[str, Any]:
    """Return what the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node_version = subprocess.run(  # noqa: S603 - fixed command
        [node, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
    lock = json.loads((BENCH / "package-lock.json").read_text())["packages"]
    try:
        import uvloop  # noqa: PLC0415 - optional

        uvloop_version: str | None = getattr(uvloop, "__version__", None)
    except ImportError:
        uvloop_version = None
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "node": node_version,
        "ws": lock["node_modules/ws"]["version"],
        "artillery": lock["node_modules/artillery"]["version"],
        "artillery_ws": lock.get("node_modules/artillery/node_modules/ws", {}).get("version"),
        "ephemeral_ports": list(port_range()),
        "load_average": list(os.getloadavg()),
    }


def bar_figures(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Return (bar line, event loop, figure) for every line of the bar that was measured."""
    figures: list[tuple[str, str, float]] = []
    names = list(BAR)
    ratios = report.get("cpu", {}).get("ratios", {})
    for name, key in zip(
        names[:3],
        ("cpu_vs_floor", "aiohttp_over_spikewatch", "artillery_over_spikewatch"),
        strict=True,
    ):
        figures += [(name, loop, value) for loop, value in ratios.get(key, {}).items()]
    for f in report.get("rss", {}).get("clients", {}).values():
        if f["client"] == "spikewatch" and f["held"] == BAR_HELD:
            figures.append((names[3], f["loop"], f["rss_per_connection_bytes"] / 1024))
    # The median over the rounds of the 3,000-in-one-batch run, per loop.
    one_batch: dict[str, list[dict[str, Any]]] = {}
    for r in report.get("avalanche", {}).get("runs", []):
        if r["batches"] == 1 and r["connections"] == BAR_AVALANCHE:
            one_batch.setdefault(r["loop"], []).append(r)
    for loop, runs in one_batch.items():
        lag = statistics.median(r["loop_lag_p99_seconds"] for r in runs)
        late = statistics.median(r["start_lateness_p99_seconds"] for r in runs)
        figures.append((names[4], loop, 1e3 * lag))
        figures.append((names[5], loop, 1e3 * late))
    for shape in report.get("daemon", {}).get("shapes", []):
        if (shape["targets"], shape["scenarios"]) == BAR_SHAPE and "idle" in shape:
            loop = shape["event_loop"]
            figures.append((names[6], loop, shape["idle"]["cpu_percent"]))
            # RSS at rest before any scrape, or after the text scrapes if higher: a
            # deployed daemon is scraped (in one format), and renderings leave their mark.
            rss = max(shape["idle"]["rss_bytes"], shape["scrape_text"]["rss_bytes_after"])
            figures.append((names[7], loop, rss / 1e6))
            figures.append((names[8], loop, 1e3 * shape["scrape_text"]["p50"]))
    return figures


def floor_at_bar(floor: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the floor's figures for the bar's batch (3,000 in one), one per process count."""
    return [f for f in floor["figures"] if f["connections"] == BAR_AVALANCHE]


def floor_context(report: dict[str, Any]) -> str | None:
    """Return the line shown beside the start-lateness bar: the floor for the same batch."""
    floor = report.get("connect_floor")
    if not floor or not floor["at_bar"]:
        return None
    per = ", ".join(
        f"{f['lateness_p99_seconds'] * 1e3:.2f} ms from {f['processes']} "
        f"process{'es' if f['processes'] > 1 else ''}"
        for f in floor["at_bar"]
    )
    return (
        f"{'':>12}    the floor ({floor['impl']}, bare kernel connects, "
        f"{BAR_AVALANCHE} in one batch): p99 {per}"
    )


def check_bar(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each line of the bar, per loop, with its figure and whether it is met."""
    measured = bar_figures(report)
    lines = []
    for name, (op, limit) in BAR.items():
        mine = [(loop, value) for n, loop, value in measured if n == name]
        for loop, value in mine:
            met = {"<=": value <= limit, ">=": value >= limit, "<": value < limit}[op]
            lines.append(
                {"bar": name, "limit": f"{op} {limit:g}", "loop": loop, "figure": value, "met": met}
            )
        if not mine:
            lines.append(
                {"bar": name, "limit": f"{op} {limit:g}", "loop": None, "figure": None, "met": None}
            )
    return lines


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _pair_ms(a: float | None, b: float | None) -> str:
    return f"{_fmt(a and a * 1e3, '.1f')}/{_fmt(b and b * 1e3, '.1f')}"


def render_table(rows: list[tuple[str, ...]]) -> str:
    """Return rows as an aligned plain-text table (the first column left-aligned)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def tables(report: dict[str, Any]) -> str:
    """Return every part's table and the bar, as text."""
    out = []
    cpu = report.get("cpu")
    if cpu:
        rows: list[tuple[str, ...]] = [
            (
                "client/loop",
                "CPU/conn (us)",
                "vs floor",
                "aiohttp / this",
                "rate (conn/s)",
                "lag p99 (ms)",
            )
        ]
        clients = cpu["clients"]
        for key, f in clients.items():
            floor = clients.get(f"floor/{f['loop']}")
            aio = clients.get(f"aiohttp/{f['loop']}")
            c = f["cpu_per_connection_seconds"]
            vs_floor = c / floor["cpu_per_connection_seconds"] if floor and c > 0 else None
            over = aio["cpu_per_connection_seconds"] / c if aio and c > 0 else None
            lag = f["burst_loop_lag_p99_seconds"]
            rows.append(
                (
                    key,
                    f"{c * 1e6:.1f}",
                    _fmt(vs_floor, ".2f", "x"),
                    _fmt(over, ".2f", "x"),
                    _fmt(f["rate_per_second"], ".0f"),
                    _fmt(lag * 1e3 if lag is not None else None, ".1f"),
                )
            )
        out += [
            f"CPU per connection, full cycle, sizes {cpu['parameters']['sizes']}",
            render_table(rows),
        ]
        for name, per_loop in cpu["ratios"].items():
            text = ", ".join(f"{k}: {v:.2f}x" for k, v in per_loop.items())
            out.append(f"  {name}: {text or '-'}")
    rss = report.get("rss")
    if rss:
        rows = [
            (
                "client/loop",
                "RSS/conn (KiB)",
                f"RSS with {rss['parameters']['sizes'][1]} held (MiB)",
            )
        ]
        for key, f in rss["clients"].items():
            rows.append(
                (
                    key,
                    f"{f['rss_per_connection_bytes'] / 1024:.2f}",
                    f"{f['rss_held_bytes'] / 2**20:.1f}",
                )
            )
        out += [
            "",
            f"RSS per held connection, sizes {rss['parameters']['sizes']}",
            render_table(rows),
        ]
    avalanche = report.get("avalanche")
    if avalanche:
        rows = [
            (
                "round",
                "loop",
                "batches",
                "result",
                "lag p99/max (ms)",
                "lateness p99/max (ms)",
                "handshake p50/p95 (ms)",
                "rate (conn/s)",
            )
        ]
        for r in avalanche["runs"]:
            rows.append(
                (
                    str(r["round"]),
                    r["loop"],
                    f"{r['batches']}x{r['connections'] // r['batches']}",
                    r["result"],
                    _pair_ms(r["loop_lag_p99_seconds"], r["loop_lag_max_seconds"]),
                    _pair_ms(r["start_lateness_p99_seconds"], r["start_lateness_max_seconds"]),
                    _pair_ms(r["handshake_p50_seconds"], r["handshake_p95_seconds"]),
                    f"{r['rate_per_second']:.0f}",
                )
            )
        out += ["", "Avalanche through spikewatch's runner", render_table(rows)]
    daemon = report.get("daemon")
    if daemon:
        out += ["", "Daemon", daemon_load.table(daemon["shapes"])]
    floor = report.get("connect_floor")
    if floor:
        out += ["", connect_floor.table(floor)]
    out += ["", "The bar"]
    bar = report["bar"]
    for i, line in enumerate(bar):
        met = {True: "met", False: "NOT met", None: "not measured"}[line["met"]]
        where = f" [{line['loop']}]" if line["loop"] else ""
        figure = _fmt(line["figure"], ".2f")
        out.append(f"  {met:>12}  {line['bar']}{where}: {figure} ({line['limit']})")
        last_of_its_bar = i + 1 == len(bar) or bar[i + 1]["bar"] != line["bar"]
        context = floor_context(report) if line["bar"] == LATENESS_BAR else None
        if last_of_its_bar and context:
            out.append(context)
    return "\n".join(out)


# -- the command --------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--clients", nargs="+", choices=ALL_CLIENTS, default=list(ALL_CLIENTS))
    parser.add_argument("--loop", choices=[*LOOPS, "both"], default="both")
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[1000, 3000], metavar=("SMALL", "BIG")
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=200, help="cycles in flight at once")
    parser.add_argument(
        "--hold-sizes", type=int, nargs=2, default=[2000, 10000], metavar=("SMALL", "BIG")
    )
    parser.add_argument("--hold-rounds", type=int, default=1)
    parser.add_argument("--avalanche", type=int, default=3000, help="connections in the avalanche")
    parser.add_argument("--avalanche-batches", type=int, default=10)
    parser.add_argument("--avalanche-interval", type=float, default=0.1, help="seconds")
    parser.add_argument("--avalanche-rounds", type=int, default=3, help="runs of each shape")
    parser.add_argument(
        "--daemon-shapes",
        type=daemon_load.parse_shape,
        nargs="+",
        default=[(20, 4), (50, 4), (100, 10)],
    )
    parser.add_argument("--daemon-idle-seconds", type=float, default=30.0)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--scrape-budget", type=float, default=daemon_load.SCRAPE_BUDGET)
    parser.add_argument(
        "--floor-sizes", type=int, nargs="+", default=[300, BAR_AVALANCHE], metavar="N"
    )
    parser.add_argument(
        "--floor-processes",
        type=int,
        nargs="+",
        default=sorted({1, os.cpu_count() or 1}),
        metavar="P",
    )
    parser.add_argument("--floor-rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    args.loops = list(LOOPS) if args.loop == "both" else [args.loop]
    small, big = args.sizes
    if not 0 < small < big <= MAX_SIZE:
        parser.error(f"--sizes: need 0 < SMALL < BIG <= {MAX_SIZE}")
    small, big = args.hold_sizes
    if not 0 < small < big <= MAX_HELD:
        parser.error(f"--hold-sizes: need 0 < SMALL < BIG <= {MAX_HELD}")
    if not (1 <= args.rounds <= MAX_ROUNDS and 1 <= args.hold_rounds <= MAX_ROUNDS):
        parser.error(f"--rounds, --hold-rounds: need 1..{MAX_ROUNDS}")
    if not 1 <= args.concurrency <= MAX_SIZE:
        parser.error(f"--concurrency: need 1..{MAX_SIZE}")
    if not 1 <= args.avalanche_batches <= args.avalanche <= MAX_AVALANCHE:
        parser.error(f"--avalanche: need 1 <= batches <= connections <= {MAX_AVALANCHE}")
    if not 0 <= args.avalanche_interval <= 10:
        parser.error("--avalanche-interval: need 0..10 s")
    if not 1 <= args.avalanche_rounds <= MAX_ROUNDS:
        parser.error(f"--avalanche-rounds: need 1..{MAX_ROUNDS}")
    if not 0 <= args.daemon_idle_seconds <= daemon_load.MAX_IDLE_SECONDS:
        parser.error(f"--daemon-idle-seconds: need 0..{daemon_load.MAX_IDLE_SECONDS}")
    if not 1 <= args.scrapes <= daemon_load.MAX_SCRAPES:
        parser.error(f"--scrapes: need 1..{daemon_load.MAX_SCRAPES}")
    if not 1 <= args.floor_rounds <= connect_floor.MAX_ROUNDS:
        parser.error(f"--floor-rounds: need 1..{connect_floor.MAX_ROUNDS}")
    try:
        for n in args.floor_sizes if "floor" in args.parts else []:
            for p in args.floor_processes:
                connect_floor.check_bounds(n, p)
    except connect_floor.FloorError as exc:
        parser.error(f"--floor-sizes, --floor-processes: {exc}")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the parts asked for; return the report (figures, raw samples, machine)."""
    node, npm = tools()
    npm_ci_seconds = install(npm)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
        "npm_ci_seconds": npm_ci_seconds,
    }
    with target(node) as port:
        if "cpu" in args.parts:
            samples, phase = measure_cpu(port, node, args)
            clients = summarize_cpu(samples, *args.sizes)
            report["cpu"] = {
                "parameters": {
                    "sizes": args.sizes,
                    "rounds": args.rounds,
                    "concurrency": args.concurrency,
                    "loops": args.loops,
                    "artillery_phase_ms": phase,
                },
                "clients": clients,
                "ratios": cpu_ratios(clients),
                "samples": samples,
            }
        if "rss" in args.parts:
            samples = measure_rss(port, args)
            report["rss"] = {
                "parameters": {
                    "sizes": args.hold_sizes,
                    "rounds": args.hold_rounds,
                    "loops": args.loops,
                },
                "clients": summarize_rss(samples, *args.hold_sizes),
                "samples": samples,
            }
        if "avalanche" in args.parts:
            runs = measure_avalanche(port, args)
            report["avalanche"] = {"runs": summarize_avalanche(runs), "raw": runs}
        if "daemon" in args.parts:
            try:
                shapes = daemon_load.run(
                    args.daemon_shapes,
                    target_port=port,
                    idle_seconds=args.daemon_idle_seconds,
                    scrapes=args.scrapes,
                    scrape_budget=args.scrape_budget,
                )
            except daemon_load.LoadError as exc:
                raise BenchError(str(exc)) from exc
            report["daemon"] = {"shapes": shapes}
    if "floor" in args.parts:
        # Last, with the target stopped: nothing else runs, and nothing runs after it.
        try:
            floor = connect_floor.measure(
                args.floor_sizes,
                args.floor_processes,
                args.floor_rounds,
                progress=lambda line: print(line, file=sys.stderr),
            )
        except connect_floor.FloorError as exc:
            raise BenchError(str(exc)) from exc
        report["connect_floor"] = {**floor, "at_bar": floor_at_bar(floor)}
    report["machine"] = machine(node)
    report["bar"] = check_bar(report)
    return report


def main(argv: list[str]) -> int:
    """Run the benchmark; print the tables; write the JSON."""
    args = parse(argv)
    try:
        report = run(args)
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(tables(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
