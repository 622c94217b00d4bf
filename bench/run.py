"""Compare the CPU cost and rate of spikewatch's engine with other WebSocket clients.

``python bench/run.py [--sizes 1000 3000] [--rounds 2] [--json out.json]``

It installs the pinned target (``npm ci``) when ``bench/node_modules`` is missing, starts
``bench/target.js`` on 127.0.0.1, then for each round and each size runs every client in
turn (A B A B ...), each burst in a fresh process (``bench/clients.py``). CPU per
connection is the marginal cost between the two sizes, so start-up cost cancels:
``(cpu(big) - cpu(small)) / (big - small)``, the median over rounds. Rate is connections
per second of wall time in the big burst, the median over rounds.
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

from clients import CLIENTS  # bench/ is the script's directory, so first on sys.path

BENCH = Path(__file__).resolve().parent
MAX_SIZE = 5000
MAX_ROUNDS = 10
#: No burst may take longer than this (seconds); a hung client fails the run.
BURST_TIMEOUT = 120.0
TARGET_START_TIMEOUT = 15.0
NPM_CI_TIMEOUT = 300.0


class BenchError(Exception):
    """The benchmark cannot run or did not produce valid figures."""


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if missing:
        raise BenchError(f"the benchmark target needs {' and '.join(missing)} on PATH")
    assert node is not None
    assert npm is not None
    return node, npm


def _install_target(npm: str) -> None:
    if (BENCH / "node_modules" / "ws").is_dir():
        return
    print("== npm ci (bench/package-lock.json)", file=sys.stderr)
    subprocess.run(  # noqa: S603 - fixed command, no user input
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=BENCH,
        check=True,
        timeout=NPM_CI_TIMEOUT,
        stdout=sys.stderr,
    )


@contextmanager
def _target(node: str) -> Iterator[int]:
    """Run the Node target on 127.0.0.1 (a free port) and yield its port."""
    process = subprocess.Popen(  # noqa: S603 - fixed command, no user input
        [node, str(BENCH / "target.js"), "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + TARGET_START_TIMEOUT
        line = ""
        # readline blocks; the target prints its line at once or dies (EOF), never stalls.
        while not line.startswith("listening ") and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                raise BenchError(f"the target exited with status {process.wait()}")
        if not line.startswith("listening "):
            raise BenchError(f"the target did not listen within {TARGET_START_TIMEOUT:g}s")
        yield int(line.split()[1])
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _burst(client: str, port: int, size: int, concurrency: int) -> dict[str, object]:
    """Run one measured burst in a fresh interpreter and return its figures."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(BENCH / "clients.py"), client, str(port), str(size), str(concurrency)],
        capture_output=True,
        text=True,
        timeout=BURST_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{client} x{size} exited {done.returncode}: {done.stderr.strip()}")
    figures: dict[str, object] = json.loads(done.stdout)
    if figures["failed"]:
        raise BenchError(
            f"{client} x{size}: {figures['failed']} of {size} cycles failed, "
            f"e.g. {figures['failures']}"
        )
    return figures


def _machine() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(  # noqa: S603 - fixed command
        [_tools()[0], "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
    lock = json.loads((BENCH / "package-lock.json").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "node": node,
        "ws": lock["packages"]["node_modules/ws"]["version"],
    }


def summarize(
    samples: list[dict[str, object]], small: int, big: int
) -> dict[str, dict[str, object]]:
    """Return each client's marginal CPU per connection and rate, medians over rounds."""
    by_key: dict[tuple[str, int, int], dict[str, object]] = {
        (str(s["client"]), int(str(s["round"])), int(str(s["connections"]))): s for s in samples
    }
    rounds = sorted({r for _, r, _ in by_key})
    result: dict[str, dict[str, object]] = {}
    for client in CLIENTS:
        if not any(c == client for c, _, _ in by_key):
            continue
        marginals, rates = [], []
        for r in rounds:
            low, high = by_key[(client, r, small)], by_key[(client, r, big)]
            cpu_low, cpu_high = float(str(low["cpu_seconds"])), float(str(high["cpu_seconds"]))
            marginals.append((cpu_high - cpu_low) / (big - small))
            rates.append(big / float(str(high["wall_seconds"])))
        result[client] = {
            "cpu_per_connection_seconds": statistics.median(marginals),
            "rate_per_second": statistics.median(rates),
            "rounds": len(rounds),
        }
    for figures in result.values():
        cpu = float(str(figures["cpu_per_connection_seconds"]))
        for ref, key in (("floor", "cpu_vs_floor"), ("aiohttp", "aiohttp_cpu_vs_this")):
            ref_cpu = float(str(result[ref]["cpu_per_connection_seconds"])) if ref in result else 0
            if ref_cpu > 0 and cpu > 0:
                figures[key] = cpu / ref_cpu if key == "cpu_vs_floor" else ref_cpu / cpu
            else:
                figures[key] = None
    return result


def _ratio(value: object) -> str:
    return f"{value:.2f}x" if isinstance(value, float) else "-"


def table(result: dict[str, dict[str, object]]) -> str:
    """Return the figures as a plain-text table."""
    rows = [("client", "CPU/conn (us)", "vs floor", "aiohttp / this", "rate (conn/s)")]
    for client, figures in result.items():
        cpu_us = float(str(figures["cpu_per_connection_seconds"])) * 1e6
        rows.append(
            (
                client,
                f"{cpu_us:.1f}",
                _ratio(figures["cpu_vs_floor"]),
                _ratio(figures["aiohttp_cpu_vs_this"]),
                f"{float(str(figures['rate_per_second'])):.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[1000, 3000], metavar=("SMALL", "BIG")
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200, help="cycles in flight at once")
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--json", type=Path, help="write the figures and every sample here")
    args = parser.parse_args(argv)
    small, big = args.sizes
    if not 0 < small < big <= MAX_SIZE:
        parser.error(f"--sizes: need 0 < SMALL < BIG <= {MAX_SIZE}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds: need 1..{MAX_ROUNDS}")
    if not 1 <= args.concurrency <= MAX_SIZE:
        parser.error(f"--concurrency: need 1..{MAX_SIZE}")
    return args


def main(argv: list[str]) -> int:
    """Run the benchmark; print the table; write the JSON when asked."""
    args = _parse(argv)
    small, big = args.sizes
    try:
        node, npm = _tools()
        _install_target(npm)
        samples: list[dict[str, object]] = []
        with _target(node) as port:
            # Warm the target (Node's JIT) so that the first client measured is not penalised.
            _burst("floor", port, small, args.concurrency)
            for round_ in range(args.rounds):
                for size in (small, big):
                    for client in args.clients:  # A B A B: drift hits every client alike
                        print(f"== round {round_ + 1} {client} x{size}", file=sys.stderr)
                        sample = _burst(client, port, size, args.concurrency)
                        samples.append({**sample, "round": round_})
        result = summarize(samples, small, big)
        machine = _machine()
    except (BenchError, subprocess.SubprocessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print(table(result))
    if args.json is not None:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "parameters": {
                "sizes": [small, big],
                "rounds": args.rounds,
                "concurrency": args.concurrency,
            },
            "clients": result,
            "samples": samples,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
