"""The floor under spike start lateness: N bare loopback connects planned for one instant.

``python bench/connect_floor.py [--sizes 300 3000] [--processes 1 2] [--rounds 3]
[--impl auto|c|python] [--json out.json]``

Each measurement runs in a fresh process: ``bench/connect_floor.c``, compiled here with
``cc -O2`` (or ``gcc``) into a temporary directory, or, when no C compiler is on PATH (or
with ``--impl python``), the same procedure in pure Python (``--once N P``, below). The
process listens on 127.0.0.1 (a free port, backlog 4096; past 4096 connections on one
port per backlog, which the connects take in turn) and never accepts: the kernel
completes each handshake into the accept queues. It plans one instant 50 ms ahead and
forks P processes, which busy-wait for it; then each issues its share of the N
connections one after another, stamping the monotonic clock just before each one's
socket and non-blocking connect (as spikewatch stamps an attempt's start just before its
``connect()``). Lateness is stamp - planned instant, over all N stamps: p50, p99
and max; and the time from the instant until the last connect returned. Untimed, after
the last connect, every handshake is checked to have completed.

No target does any work in userspace, no event loop runs, no WebSocket upgrade is sent:
this is what the kernel alone costs to start N connections from P processes on this
machine, so spikewatch's start lateness for the same batch cannot be lower.

It prints a table and, last, one JSON line: the medians over rounds per (N, P) and every
round's raw figures. ``bench/run.py`` runs it as its ``floor`` part through
:func:`measure`. Bounded: N <= 10,000 and no larger than 4 listen backlogs (4096 each,
capped by ``net.core.somaxconn``), P <= 16, 10 rounds; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clients import raise_fd_limit  # bench/ is the script's directory, so first on sys.path

# The same percentile as spikewatch's start lateness (the C program computes it alike).
from spikewatch.core.stats import percentile

BENCH = Path(__file__).resolve().parent
SOURCE = BENCH / "connect_floor.c"
COMPILERS = ("cc", "gcc")
IMPLS = ("auto", "c", "python")
MAX_CONNECTIONS = 10_000
#: Past one listen backlog the connects take several listeners in turn, at most this many.
MAX_LISTENERS = 4
MAX_PROCESSES = 16
MAX_ROUNDS = 10
#: What the listener asks for; the kernel caps it at net.core.somaxconn.
BACKLOG = 4096
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
#: The planned instant is this far ahead of the moment it is set (ns), as in the C.
LEAD_NS = 50_000_000
#: Waiting for the handshakes to complete, after the timed part (seconds).
ESTABLISH_TIMEOUT = 5.0
#: fds a process needs beside its connections.
FD_MARGIN = 16
#: No measurement process or compile may take longer than this (seconds).
PROCESS_TIMEOUT = 60.0
#: What a child sends before its stamps: count, ready, done (ns), established.
_HEADER = struct.Struct("<4q")


class FloorError(Exception):
    """The floor cannot be measured, or a measurement is incomplete."""


class RefusedError(FloorError):
    """The sizes asked for are beyond the bounds or this machine's listen backlog."""


# -- bounds -------------------------------------------------------------------------------


def effective_backlog() -> int:
    """Return the listen backlog the kernel grants: min(4096, ``net.core.somaxconn``)."""
    try:
        somaxconn = int(SOMAXCONN.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        somaxconn = BACKLOG
    return min(BACKLOG, somaxconn)


def check_bounds(connections: int, processes: int) -> None:
    """Raise unless ``connections`` from ``processes`` can be measured here, saying why."""
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise RefusedError(f"N={connections} refused: need 1 <= N <= {MAX_CONNECTIONS}")
    if not 1 <= processes <= min(MAX_PROCESSES, connections):
        raise RefusedError(
            f"P={processes} refused: need 1 <= P <= {MAX_PROCESSES} and P <= N ({connections})"
        )
    backlog = effective_backlog()
    if connections > backlog * MAX_LISTENERS:
        raise RefusedError(
            f"N={connections} refused: it exceeds the listen backlog {backlog} "
            f"(min({BACKLOG}, net.core.somaxconn)) times {MAX_LISTENERS} listeners; past it "
            "the kernel drops SYNs instead of completing handshakes"
        )


# -- the pure-Python fallback (one measurement, in its own process) -----------------------


def _await_handshakes(socks: list[socket.socket]) -> int:
    """Return how many of ``socks`` completed their handshake (writable, SO_ERROR 0)."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    established = 0
    deadline = time.monotonic() + ESTABLISH_TIMEOUT
    while by_fd and (left := deadline - time.monotonic()) > 0:
        for fd, events in poller.poll(left * 1e3):
            sock = by_fd.pop(fd)
            poller.unregister(fd)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error == 0 and not events & (select.POLLERR | select.POLLHUP):
                established += 1
    return established


def _child(out: int, addresses: list[tuple[str, int]], count: int, planned: int) -> None:
    """Wait for ``planned``, connect ``count`` times, send the stamps to ``out``."""
    stamps = array("q", bytes(8 * count))
    socks: list[socket.socket] = []
    ready = time.monotonic_ns()
    while time.monotonic_ns() < planned:
        pass  # busy-wait: a sleep would add the scheduler's wake-up latency
    try:
        for i in range(count):
            stamps[i] = time.monotonic_ns()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setblocking(False)
            error = sock.connect_ex(addresses[i % len(addresses)])
            if error not in (0, errno.EINPROGRESS):
                raise OSError(error, f"connect: {os.strerror(error)}")
        done = time.monotonic_ns()
        established = _await_handshakes(socks)
        message = _HEADER.pack(count, ready, done, established) + stamps.tobytes()
        with os.fdopen(out, "wb") as pipe:
            pipe.write(message)
    finally:
        rst = struct.pack("ii", 1, 0)  # SO_LINGER 0: close with an RST, no TIME_WAIT
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, rst)
            sock.close()


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _listeners(stack: contextlib.ExitStack, connections: int) -> list[socket.socket]:
    """Listen on as many ports as ``connections`` need (one per listen backlog)."""
    listeners = []
    for _ in range(-(-connections // effective_backlog())):
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind(("127.0.0.1", 0))
        listener.listen(BACKLOG)
        listeners.append(listener)
    return listeners


def python_once(connections: int, processes: int) -> dict[str, Any]:
    """Measure once in pure Python, in this process and ``processes`` forked children.

    The same procedure and figures as ``bench/connect_floor.c``; call it from a fresh,
    single-threaded process (it forks).
    """
    check_bounds(connections, processes)
    raise_fd_limit()
    with contextlib.ExitStack() as listening:
        listeners = _listeners(listening, connections)
        addresses: list[tuple[str, int]] = [sock.getsockname() for sock in listeners]
        set_at = time.monotonic_ns()
        planned = set_at + LEAD_NS
        children: list[tuple[int, int, int]] = []  # pid, read end, connections
        sys.stdout.flush()
        sys.stderr.flush()
        for i in range(processes):
            count = connections // processes + (1 if i < connections % processes else 0)
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                status = 1
                try:
                    os.close(read_end)
                    for listener in listeners:
                        listener.close()
                    for _, other, _ in children:
                        os.close(other)
                    _child(write_end, addresses, count, planned)
                    status = 0
                except BaseException:  # noqa: BLE001 - reported, then the child exits 1
                    traceback.print_exc()
                finally:
                    os._exit(status)
            os.close(write_end)
            children.append((pid, read_end, count))
        messages = []
        for _, read_end, _ in children:
            messages.append(_read_to_end(read_end))
            os.close(read_end)
        failed = []
        for i, (pid, _, count) in enumerate(children):
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(f"child {i} ({count} connections) failed")
    # The listener is closed: the queued, never-accepted connections are reset.
    if failed:
        raise FloorError("; ".join(failed))
    lateness: list[int] = []
    ready_margins, dones, established = [], [], 0
    for message, (_, _, count) in zip(messages, children, strict=True):
        got, ready, done, ok = _HEADER.unpack_from(message)
        stamps = array("q", message[_HEADER.size :])
        if got != count or len(stamps) != count:
            raise FloorError(f"a child sent {len(stamps)} stamps for {count} connections")
        lateness += [stamp - planned for stamp in stamps]
        ready_margins.append((planned - ready) / 1e9)
        dones.append(done)
        established += ok
    lateness.sort()
    return {
        "impl": "python",
        "n": connections,
        "processes": processes,
        "backlog": effective_backlog(),
        "lead_seconds": (planned - set_at) / 1e9,
        "ready_margin_seconds": ready_margins,
        "lateness_seconds": {
            "min": lateness[0] / 1e9,
            "p50": percentile(lateness, 0.5) / 1e9,
            "p99": percentile(lateness, 0.99) / 1e9,
            "max": lateness[-1] / 1e9,
        },
        "last_connect_seconds": (max(dones) - planned) / 1e9,
        "established": established,
    }


# -- the driver ---------------------------------------------------------------------------


def find_compiler() -> str | None:
    """Return the path of the first C compiler of :data:`COMPILERS` on PATH, or None."""
    for name in COMPILERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def compile_floor(compiler: str, directory: Path) -> Path:
    """Compile ``bench/connect_floor.c`` with ``-O2`` into ``directory``; return the binary."""
    binary = directory / "connect_floor"
    done = subprocess.run(  # noqa: S603 - a compiler from PATH, our own source
        [compiler, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise FloorError(f"{compiler} could not compile {SOURCE.name}: {done.stderr[-2000:]}")
    return binary


def _compiler_version(compiler: str) -> str | None:
    try:
        done = subprocess.run(  # noqa: S603 - a compiler from PATH
            [compiler, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    return lines[0] if lines else None


def run_once(binary: Path | None, connections: int, processes: int) -> dict[str, Any]:
    """Measure once in a fresh process (the C binary, or this script's ``--once`` when None).

    Return its figures; raise when it fails or its figures are incomplete.
    """
    sizes = [str(connections), str(processes)]
    if binary is not None:
        command = [str(binary), *sizes]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--once", *sizes]
    done = subprocess.run(  # noqa: S603 - our own program
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise FloorError(
            f"connect floor x{connections} from {processes} process(es) exited "
            f"{done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    check_figures(figures, connections, processes)
    return figures


def check_figures(figures: dict[str, Any], connections: int, processes: int) -> None:
    """Raise unless one measurement is complete: every handshake done, every child in time."""
    if (figures["n"], figures["processes"]) != (connections, processes):
        raise FloorError(f"asked for {connections} from {processes}, measured {figures}")
    if figures["established"] != connections:
        raise FloorError(
            f"only {figures['established']} of {connections} handshakes completed: "
            "the connects were not all real ones"
        )
    margins = figures["ready_margin_seconds"]
    if len(margins) != processes or min(margins) <= 0:
        raise FloorError(
            f"a process was not ready before the planned instant ({margins} s ahead): "
            "its start-up would count as lateness"
        )
    late = figures["lateness_seconds"]
    if not 0 <= late["min"] <= late["p50"] <= late["p99"] <= late["max"]:
        raise FloorError(f"inconsistent lateness figures: {late}")


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    late = [r["lateness_seconds"] for r in rounds]
    return {
        "connections": rounds[0]["n"],
        "processes": rounds[0]["processes"],
        "lateness_p50_seconds": statistics.median(x["p50"] for x in late),
        "lateness_p99_seconds": statistics.median(x["p99"] for x in late),
        "lateness_max_seconds": statistics.median(x["max"] for x in late),
        "last_connect_seconds": statistics.median(r["last_connect_seconds"] for r in rounds),
        "lateness_p99_rounds": [x["p99"] for x in late],
        "rounds": len(rounds),
    }


def measure(
    sizes: Sequence[int],
    processes: Sequence[int],
    rounds: int,
    *,
    impl: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every size from every number of processes, ``rounds`` times (A B A B).

    ``impl``: ``c`` (fail without a C compiler), ``python`` (the fallback, forced), or
    ``auto`` (C when a compiler is on PATH). Return the implementation used, the medians
    over rounds per (size, processes) under ``figures``, and every round under ``raw``.
    """
    if impl not in IMPLS:
        raise FloorError(f"impl {impl!r}: need one of {', '.join(IMPLS)}")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise RefusedError(f"rounds={rounds} refused: need 1..{MAX_ROUNDS}")
    for n in sizes:
        for p in processes:
            check_bounds(n, p)
    raise_fd_limit()
    compiler = find_compiler() if impl != "python" else None
    note = None
    if compiler is None and impl == "c":
        raise FloorError(f"no C compiler on PATH (looked for {', '.join(COMPILERS)})")
    if compiler is None and impl == "auto":
        note = f"no C compiler on PATH (looked for {', '.join(COMPILERS)}): pure Python"
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="connect_floor-") as directory:
        binary = compile_floor(compiler, Path(directory)) if compiler is not None else None
        for round_ in range(rounds):
            for n in sizes:
                for p in processes:
                    if progress is not None:
                        progress(f"== floor round {round_ + 1} x{n} from {p} process(es)")
                    raw.append({**run_once(binary, n, p), "round": round_ + 1})
    figures = [
        _summary([r for r in raw if (r["n"], r["processes"]) == (n, p)])
        for n in sizes
        for p in processes
    ]
    return {
        "impl": "c" if compiler is not None else "python",
        "compiler": compiler,
        "compiler_version": _compiler_version(compiler) if compiler is not None else None,
        "note": note,
        "parameters": {
            "sizes": list(sizes),
            "processes": list(processes),
            "rounds": rounds,
            "lead_seconds": LEAD_NS / 1e9,
            "backlog": effective_backlog(),
        },
        "figures": figures,
        "raw": raw,
    }


def table(result: dict[str, Any]) -> str:
    """Return the medians as plain-text lines."""
    how = result["impl"] if result["compiler"] is None else f"c, {result['compiler']} -O2"
    rounds = result["parameters"]["rounds"]
    lines = [
        f"Connect floor ({how}): N bare loopback connects planned for one instant, "
        f"median of {rounds} round(s)"
    ]
    if result["note"]:
        lines.append(f"  {result['note']}")
    for f in result["figures"]:
        per_round = "/".join(f"{x * 1e3:.1f}" for x in f["lateness_p99_rounds"])
        lines.append(
            f"  {f['connections']:>5} from {f['processes']:>2} process(es): lateness "
            f"p50 {f['lateness_p50_seconds'] * 1e3:.1f} ms, "
            f"p99 {f['lateness_p99_seconds'] * 1e3:.1f} ms ({per_round}), "
            f"max {f['lateness_max_seconds'] * 1e3:.1f} ms; "
            f"last connect returned at {f['last_connect_seconds'] * 1e3:.1f} ms"
        )
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000])
    parser.add_argument(
        "--processes", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1})
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impl", choices=IMPLS, default="auto")
    parser.add_argument("--json", type=Path)
    # One pure-Python measurement, in this process: what --impl python runs per round.
    parser.add_argument("--once", type=int, nargs=2, metavar=("N", "P"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Measure the floor; print the table and one JSON line; write the JSON when asked."""
    args = _parse(argv)
    try:
        if args.once is not None:
            print(json.dumps(python_once(*args.once)))
            return 0
        result = measure(
            args.sizes,
            args.processes,
            args.rounds,
            impl=args.impl,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except RefusedError as exc:
        print(f"connect_floor: {exc}", file=sys.stderr)
        return 2
    except (FloorError, OSError, subprocess.SubprocessError) as exc:
        print(f"connect_floor: {exc}", file=sys.stderr)
        return 1
    print(table(result))
    print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
