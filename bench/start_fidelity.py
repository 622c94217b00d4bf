"""Spike start fidelity (issue 15): start lateness next to the kernel's floor, and the
prober's handshake times against the wire's.

``python bench/start_fidelity.py [--shapes 1x3000 10x300 1x10000] [--loop both]
[--workers 1 2] [--rounds 2] [--floor-rounds 3] [--capture 3000] [--json PATH]``

- **Start lateness**: each shape (batches x connections per batch) through spikewatch's
  runner (``bench/avalanche.py``: ``parse_config``, ``make_prober``, ``ScenarioRun``) on
  each loop, from one process and with ``prober.workers: 2``, against the Node target
  (``bench/target.js``), after one discarded warm-up run; p50/p99/max of actual - planned
  start over every spike connection, the median over rounds. Beside it, the kernel's
  floor (``bench/connect_floor.py``, bare non-blocking connects in C, nothing else
  running) for one batch of the same size from as many processes, measured in the same
  run once the target has stopped, and the ratio of the two p99s.
- **Handshakes against the wire** (``--capture N``, 0 to skip): one avalanche of N in one
  batch per loop, with ``tcpdump`` capturing the target's port on ``lo`` (SYNs, and
  answers that start with ``HTTP``); per client port, SYN -> ``101`` on the wire; its
  p50 beside the run's handshake p50 (connect start -> upgrade answer, as the prober
  timed it). Needs ``tcpdump`` and the right to capture (root or CAP_NET_RAW).

Everything is on 127.0.0.1; at most 10,000 connections in one run (the soft fd limit is
raised to the hard one, which must allow them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import connect_floor
from clients import raise_fd_limit
from run import BENCH, BenchError, install, run_script, target, tools

MAX_CONNECTIONS = 10_000
#: One avalanche run may take no longer than this (seconds).
RUN_TIMEOUT = 300.0
#: tcpdump's kernel buffer (KiB): a 10,000-connection burst must not drop packets.
CAPTURE_BUFFER_KIB = 65536


def shape(text: str) -> tuple[int, int]:
    """Parse ``BxN`` (B batches of N connections) into (batches, connections in all)."""
    batches, _, each = text.partition("x")
    b, n = int(batches), int(each)
    if not (1 <= b <= 100 and n >= 1 and b * n <= MAX_CONNECTIONS):
        raise argparse.ArgumentTypeError(f"{text}: need B x N <= {MAX_CONNECTIONS}")
    return b, b * n


def avalanche(  # noqa: PLR0917 - one shape of one run
    port: int, total: int, batches: int, loop: str, workers: int, tree: Path | None = None
) -> dict[str, Any]:
    """Run one avalanche in a fresh process (spikewatch imported from ``tree``, if given)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    figures = run_script(
        "avalanche.py",
        str(port),
        str(total),
        str(batches),
        "0.1" if batches > 1 else "0",
        "--loop",
        loop,
        "--workers",
        str(workers),
        env=env,
        timeout=RUN_TIMEOUT,
    )
    spike = figures["result"]["spike"]
    if spike["outcomes"] != {"ok": total}:
        raise BenchError(f"{batches}x{total // batches} on {loop}: {spike['outcomes']}")
    return figures


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """Return what the table shows of one avalanche run."""
    result = figures["result"]
    spike = result["spike"]
    late = spike["start_lateness_seconds"]
    return {
        "result": result["result"],
        "late_p50": late["p50"],
        "late_p99": late["p99"],
        "late_max": late["max"],
        "handshake_p50": spike["handshake_seconds"]["p50"],
        "lag_p99_here": figures.get("spike_loop_lag_seconds", {}).get("p99"),
        "lag_p99_worst": result["prober"]["loop_lag_p99_seconds"],
        "rss_bytes": result["prober"]["rss_bytes"],
    }


# -- the packet capture -------------------------------------------------------------------


def wire_handshakes(pcap: Path, port: int) -> list[float]:
    """Return SYN -> ``101`` per client port from a pcap of ``lo`` (Ethernet framing)."""
    data = pcap.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    offset = 24
    syn: dict[int, float] = {}
    upgraded: dict[int, float] = {}
    while offset + 16 <= len(data):
        seconds, fraction, caught, _ = struct.unpack("<IIII", data[offset : offset + 16])
        packet = data[offset + 16 : offset + 16 + caught]
        offset += 16 + caught
        at = seconds + fraction * scale
        if len(packet) < 14 + 20 or packet[12:14] != b"\x08\x00":
            continue
        ip = packet[14:]
        ihl = (ip[0] & 0x0F) * 4
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        source, destination = struct.unpack("!HH", tcp[:4])
        flags = tcp[13]
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if flags & 0x02 and not flags & 0x10 and destination == port:
            syn.setdefault(source, at)
        elif source == port and payload.startswith(b"HTTP/1.1 101"):
            upgraded.setdefault(destination, at)
    return [upgraded[p] - syn[p] for p in upgraded if p in syn and upgraded[p] >= syn[p]]


def capture_check(port: int, total: int, loop: str, folder: Path) -> dict[str, Any]:
    """One avalanche of ``total`` in one batch with tcpdump running; compare handshakes."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise BenchError("the capture needs tcpdump on PATH (Debian: apt-get install tcpdump)")
    pcap = folder / f"avalanche-{loop}.pcap"
    # SYNs to the target, and what it sends that starts with "HTTP" (the upgrade answers).
    expression = (
        f"tcp port {port} and ((tcp[tcpflags] & (tcp-syn|tcp-ack)) == tcp-syn or "
        "tcp[((tcp[12] & 0xf0) >> 2):4] = 0x48545450)"
    )
    dump = subprocess.Popen(  # noqa: S603 - fixed command, loopback only
        [
            tcpdump,
            "-i",
            "lo",
            "-n",
            "-s",
            "200",
            "-B",
            str(CAPTURE_BUFFER_KIB),
            "-U",
            "-w",
            str(pcap),
            expression,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # tcpdump prints nothing when it is ready; give it a moment
        figures = avalanche(port, total, 1, loop, 1)
    finally:
        dump.send_signal(signal.SIGINT)
        _, stderr = dump.communicate(timeout=30)
    dropped = [line for line in stderr.splitlines() if "dropped by kernel" in line]
    wire = wire_handshakes(pcap, port)
    spike = figures["result"]["spike"]
    prober_p50 = spike["handshake_seconds"]["p50"]
    wire_p50 = statistics.median(wire) if wire else None
    return {
        "loop": loop,
        "connections": total,
        "wire_handshakes": len(wire),
        "wire_p50": wire_p50,
        "wire_p95": statistics.quantiles(wire, n=20)[18] if len(wire) > 20 else None,
        "prober_p50": prober_p50,
        "prober_p95": spike["handshake_seconds"]["p95"],
        "p50_ratio": prober_p50 / wire_p50 if wire_p50 else None,
        "tcpdump": dropped[0] if dropped else stderr.strip().splitlines()[-1:],
        "late_p99": spike["start_lateness_seconds"]["p99"],
    }


# -- the whole run ------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every part; return the report.

    Per round and shape: the connect floor for one batch of its size (the target idle),
    then each loop and process count, the code before (``--before``) and after in turn.
    """
    node, npm = tools()
    install(npm)
    raise_fd_limit()
    runs: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    captures: list[dict[str, Any]] = []
    trees: list[tuple[str, Path | None]] = [("after", None)]
    if args.before is not None:
        trees.insert(0, ("before", args.before.resolve()))
    with target(node) as port, tempfile.TemporaryDirectory() as folder:
        print("== warm-up: 3000 in 10 batches", file=sys.stderr)
        avalanche(port, 3000, 10, "uvloop", 1)
        for round_ in range(args.rounds):
            for batches, total in args.shapes:
                if round_ >= args.big_rounds and total > 3000:
                    continue
                size = total // batches
                print(
                    f"== round {round_ + 1}: the floor, {size} from {args.workers}", file=sys.stderr
                )
                floors.extend(connect_floor.measure([size], args.workers, 1)["figures"])
                for loop in args.loops:
                    for workers in args.workers:
                        for name, tree in trees:
                            label = f"{batches}x{size} {loop} workers={workers} {name}"
                            print(f"== round {round_ + 1}: {label}", file=sys.stderr)
                            figures = avalanche(port, total, batches, loop, workers, tree)
                            runs.append(
                                {
                                    "round": round_ + 1,
                                    "tree": name,
                                    "batches": batches,
                                    "connections": total,
                                    "loop": loop,
                                    "workers": workers,
                                    **summary(figures),
                                }
                            )
        if args.capture:
            for loop in args.loops:
                print(f"== capture: {args.capture} in one batch on {loop}", file=sys.stderr)
                captures.append(capture_check(port, args.capture, loop, Path(folder)))
    return {"runs": runs, "floors": floors, "captures": captures, "rows": rows(runs, floors)}


def rows(runs: list[dict[str, Any]], floors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The medians per shape, loop, process count and tree, beside the floor's."""

    def med(these: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in these if r.get(key) is not None]
        return statistics.median(values) if values else None

    keys = sorted(
        {(r["batches"], r["connections"], r["loop"], r["workers"], r["tree"]) for r in runs},
        key=lambda k: (-(k[1] // k[0]), k[0], k[2], k[3], k[4] != "before"),
    )
    out = []
    for batches, total, loop, workers, tree in keys:
        mine = [
            r
            for r in runs
            if (r["batches"], r["connections"], r["loop"], r["workers"], r["tree"])
            == (batches, total, loop, workers, tree)
        ]
        size = total // batches
        floor = [f for f in floors if (f["connections"], f["processes"]) == (size, workers)]
        late_p99 = med(mine, "late_p99")
        floor_p99 = med(floor, "lateness_p99_seconds")
        out.append(
            {
                "shape": f"{batches} x {size}",
                "loop": loop,
                "processes": workers,
                "tree": tree,
                "rounds": len(mine),
                "late_p50": med(mine, "late_p50"),
                "late_p99": late_p99,
                "late_max": med(mine, "late_max"),
                "floor_p50": med(floor, "lateness_p50_seconds"),
                "floor_p99": floor_p99,
                "p99_over_floor": late_p99 / floor_p99 if late_p99 and floor_p99 else None,
                "lag_p99": med(mine, "lag_p99_worst"),
                "handshake_p50": med(mine, "handshake_p50"),
                "rss_bytes": med(mine, "rss_bytes"),
                "results": [r["result"] for r in mine],
            }
        )
    return out


def _table(columns: list[tuple[str, str]], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: ``columns`` as (title, ``---`` or ``---:``), then ``rows``."""
    return [
        "| " + " | ".join(title for title, _ in columns) + " |",
        "| " + " | ".join(align for _, align in columns) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


#: The start lateness table's columns.
ROW_COLUMNS = [
    ("shape", "---"),
    ("loop", "---"),
    ("processes", "---:"),
    ("code", "---"),
    ("start lateness p50 / p99 / max (ms)", "---:"),
    ("floor p50 / p99 (ms)", "---:"),
    ("p99 / floor", "---:"),
    ("loop lag p99 (ms)", "---:"),
    ("handshake p50 (ms)", "---:"),
    ("results", "---"),
]

#: The handshakes-against-the-wire table's columns.
CAPTURE_COLUMNS = [
    ("loop", "---"),
    ("connections", "---:"),
    ("SYN -> 101 on the wire p50 / p95 (ms)", "---:"),
    ("prober's handshake p50 / p95 (ms)", "---:"),
    ("p50 prober / wire", "---:"),
    ("tcpdump", "---"),
]


def render(report: dict[str, Any]) -> str:
    """The tables, as Markdown."""
    rows = [
        [
            r["shape"],
            r["loop"],
            str(r["processes"]),
            r["tree"],
            f"{_ms(r['late_p50'])} / {_ms(r['late_p99'])} / {_ms(r['late_max'])}",
            f"{_ms(r['floor_p50'])} / {_ms(r['floor_p99'])}",
            "-" if r["p99_over_floor"] is None else f"{r['p99_over_floor']:.2f}x",
            _ms(r["lag_p99"]),
            _ms(r["handshake_p50"]),
            ", ".join(r["results"]),
        ]
        for r in report["rows"]
    ]
    lines = _table(ROW_COLUMNS, rows)
    if report["captures"]:
        captures = [
            [
                c["loop"],
                f"{c['wire_handshakes']} of {c['connections']}",
                f"{_ms(c['wire_p50'])} / {_ms(c['wire_p95'])}",
                f"{_ms(c['prober_p50'])} / {_ms(c['prober_p95'])}",
                "-" if c["p50_ratio"] is None else f"{c['p50_ratio']:.3f}",
                str(c["tcpdump"]),
            ]
            for c in report["captures"]
        ]
        lines += ["", *_table(CAPTURE_COLUMNS, captures)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark; print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=shape, nargs="+", default=["1x3000", "10x300", "1x10000"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--big-rounds", type=int, default=1, help="rounds of shapes past 3000")
    parser.add_argument("--floor-rounds", type=int, default=3)
    parser.add_argument("--capture", type=int, default=3000, help="0: no packet capture")
    parser.add_argument("--before", type=Path, help="also run this checkout (before a change)")
    parser.add_argument("--json", type=Path, default=BENCH / "results" / "start_fidelity.json")
    args = parser.parse_args(argv)
    args.shapes = [shape(s) if isinstance(s, str) else s for s in args.shapes]
    args.loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if not 0 <= args.capture <= MAX_CONNECTIONS:
        parser.error(f"--capture: need 0..{MAX_CONNECTIONS}")
    if not all(1 <= w <= 4 for w in args.workers) or not 1 <= args.rounds <= 10:
        parser.error("--workers: 1..4; --rounds: 1..10")
    try:
        report = measure(args)
    except (BenchError, connect_floor.FloorError, subprocess.SubprocessError) as exc:
        print(f"bench/start_fidelity.py: {exc}", file=sys.stderr)
        return 1
    report["machine"] = {"nproc": os.cpu_count(), "load": os.getloadavg()}
    print(render(report))
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
