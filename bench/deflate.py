"""What permessage-deflate costs: client CPU per connection, and memory per held connection
on the client and on the server (Node ``ws`` and Python ``websockets``).

``python bench/deflate.py [--cycles 400] [--held 300] [--loop uvloop]``

Prints figures, one table and a JSON line; asserts nothing about time. Every variant runs
in a fresh process (``cycle`` and ``hold`` below), against a fresh server for the memory
figures, all on 127.0.0.1:

- CPU: ``--cycles`` full cycles (upgrade, one echo of a ~600-byte JSON message, close),
  20 at a time, against Node ``ws`` with perMessageDeflate on; CPU seconds per connection
  of the client process, without compression and with each deflate variant.
- Memory: ``--held`` connections opened, echoed once and held; the RSS growth per held
  connection of the client process and of the server process (read from /proc).

Variants: ``off`` (no offer), ``deflate`` (defaults: context takeover both ways),
``client_nct`` (client_no_context_takeover), ``both_nct`` (no context takeover either way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from run import install, server_process, tools  # noqa: E402 - bench/ is the script's directory

from spikewatch.config import parse_config  # noqa: E402 - after the path is set
from spikewatch.core.attempt import Attempt  # noqa: E402
from spikewatch.core.outcomes import Outcome, Phase  # noqa: E402
from spikewatch.engine.connection import ClientConnection, open_connection  # noqa: E402
from spikewatch.engine.registry import ConnectionRegistry  # noqa: E402
from spikewatch.engine.spec import ConnectionSpec, build_connection_spec  # noqa: E402

VARIANTS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "deflate": {"deflate": True},
    "client_nct": {"deflate": True, "client_no_context_takeover": True},
    "both_nct": {
        "deflate": True,
        "client_no_context_takeover": True,
        "server_no_context_takeover": True,
    },
}
ECHO = {
    "payload": '{"type":"ping","seq":{seq},"items":[' + ",".join(['"item"'] * 80) + "]}",
    "match": '"seq":{seq}',
}


def _rss(pid: int | str = "self") -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _spec(port: int, variant: str) -> ConnectionSpec:
    target: dict[str, Any] = {"name": "t", "url": f"ws://127.0.0.1:{port}/", "echo": ECHO}
    compression = VARIANTS[variant]
    if compression is not None:
        target["compression"] = compression
    config = parse_config(
        {"targets": [target], "scenarios": [{"name": "s", "spike": {"connections": 1}}]}
    )
    return build_connection_spec(config.targets[0], "127.0.0.1")


def _run(coro: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only when asked for

        return uvloop.run(coro)
    return asyncio.run(coro)


# -- the child processes --------------------------------------------------------------------


async def _cycles(spec: ConnectionSpec, n: int, concurrency: int) -> dict[str, Any]:
    registry = ConnectionRegistry(concurrency + 1)
    failed: list[str] = []

    async def one(conn: int) -> None:
        attempt = Attempt(Phase.SPIKE, conn)
        c = await open_connection(spec, attempt, registry)
        if c is not None:
            await c.wait_closed()
        if attempt.outcome != Outcome.OK:
            failed.append(attempt.detail)

    for k in range(concurrency):  # warm up: imports, first allocations
        await one(k)
    started = time.process_time()
    for base in range(0, n, concurrency):
        await asyncio.gather(*(one(base + k) for k in range(min(concurrency, n - base))))
    cpu = time.process_time() - started
    return {"cpu_per_connection_us": cpu / n * 1e6, "failed": len(failed), "example": failed[:1]}


async def _hold(spec: ConnectionSpec, n: int) -> dict[str, Any]:
    registry = ConnectionRegistry(n + 1)
    held: list[ClientConnection] = []
    await _cycles(spec, 20, 10)  # warm up in the same way as the cycle figures
    gc.collect()
    before = _rss()
    for base in range(0, n, 20):
        attempts = [Attempt(Phase.SPIKE, base + k) for k in range(min(20, n - base))]
        conns = await asyncio.gather(
            *(open_connection(spec, a, registry, keep_open=True) for a in attempts)
        )
        held += [c for c in conns if c is not None and c.is_open]
    gc.collect()
    after = _rss()
    print(json.dumps({"held": len(held)}), flush=True)
    # The parent reads the server's RSS now, then says when to let go.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in held:
        c.close()
    await asyncio.gather(*(c.wait_closed() for c in held))
    return {"held": len(held), "client_rss_per_held_bytes": (after - before) / max(1, len(held))}


async def _serve_websockets(compression: str | None) -> None:
    from websockets.asyncio.server import serve  # noqa: PLC0415 - the serve child only

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=compression) as server:
        print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


# -- the parent -----------------------------------------------------------------------------


@contextlib.contextmanager
def _server(kind: str) -> Iterator[tuple[int, int]]:
    """Start a deflate-enabled server of ``kind``; yield its port and pid."""
    if kind == "node":
        cmd = [shutil.which("node") or "node", str(BENCH / "deflate_target.js"), "0", "true"]
    else:
        cmd = [sys.executable, __file__, "serve-websockets"]
    with server_process(cmd, f"the {kind} server") as (port, process):
        # Node prints a line per connection and per close: drain them in the background.
        stdout = process.stdout
        assert stdout is not None
        threading.Thread(target=stdout.read, daemon=True).start()
        yield port, process.pid


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, as a dict."""
    figures: dict[str, Any] = {"cpu": {}, "memory": {}, "loop": args.loop}
    install(tools()[1])  # Node's ws, from bench/package-lock.json, the first time
    with _server("node") as (port, _):
        for variant in VARIANTS:
            child = _child("cycle", str(port), variant, str(args.cycles), "--loop", args.loop)
            out, _ = child.communicate(timeout=600)
            figures["cpu"][variant] = json.loads(out.strip().splitlines()[-1])
    for kind in ("node", "websockets"):
        for variant in VARIANTS:
            with _server(kind) as (port, pid):
                time.sleep(0.2)
                server_before = _rss(pid)
                child = _child("hold", str(port), variant, str(args.held), "--loop", args.loop)
                assert child.stdout is not None
                assert child.stdin is not None
                json.loads(child.stdout.readline())
                time.sleep(0.2)
                server_after = _rss(pid)
                out, _ = child.communicate("go\n", timeout=600)
                held = json.loads(out.strip().splitlines()[-1])
                held["server_rss_per_held_bytes"] = (server_after - server_before) / max(
                    1, held["held"]
                )
                figures["memory"][f"{kind}/{variant}"] = held
    return figures


def main(argv: list[str]) -> int:
    """Run what the arguments ask for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="measure")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--cycles", type=int, default=400)
    parser.add_argument("--held", type=int, default=300)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args(argv)
    if args.mode == "serve-websockets":
        asyncio.run(_serve_websockets("deflate"))
        return 0
    if args.mode in ("cycle", "hold"):
        port, variant, n = int(args.rest[0]), args.rest[1], int(args.rest[2])
        spec = _spec(port, variant)
        if args.mode == "cycle":
            result = _run(_cycles(spec, n, 20), args.loop)
        else:
            result = _run(_hold(spec, n), args.loop)
        print(json.dumps(result), flush=True)
        return 0
    figures = measure(args)
    print(f"client CPU per connection (full cycle, {args.loop}, {args.cycles} connections):")
    for variant, cpu in figures["cpu"].items():
        print(f"  {variant:<11} {cpu['cpu_per_connection_us']:8.0f} us   failed {cpu['failed']}")
    print(f"memory per held connection ({args.held} held, one echo each):")
    for name, mem in figures["memory"].items():
        print(
            f"  {name:<22} client {mem['client_rss_per_held_bytes'] / 1024:7.1f} KiB   "
            f"server {mem['server_rss_per_held_bytes'] / 1024:7.1f} KiB"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
