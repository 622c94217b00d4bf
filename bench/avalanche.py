"""One avalanche run of spikewatch's real runner against the bench target, in this process.

``python bench/avalanche.py PORT CONNECTIONS BATCHES BATCH_INTERVAL [--loop L]`` builds
the config through ``parse_config`` (the daemon's validation), the prober with
``make_prober`` (what ``spikewatch once`` and the daemon use), runs the scenario with
``ScenarioRun`` (what ``execute_run`` wraps) and prints one JSON line: the run's own
result (``RunResult.as_dict()``), and from the prober's monitor the loop lag over the
spike (p99 and max: the result carries only the p99), the spike's rate and its wall time.

The scenario: 5 baseline probes 50 ms apart, the spike (welcome and echo on every
connection, then held until T0), recovery probes every 100 ms until 3 good in a row
(10 s at most). The prober's settings are the daemon's defaults (lag sampled every 20 ms).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from clients import LOOPS, new_loop, raise_fd_limit, spikewatch_target

#: Connections beyond the spike that the limit must allow (probes keep 4 slots).
_LIMIT_MARGIN = 64


def config_document(
    port: int,
    connections: int,
    batches: int,
    interval: float,
    *,
    workers: int = 1,
    loop: str = "asyncio",
) -> dict[str, Any]:
    """Return the config of the avalanche scenario against 127.0.0.1:``port``."""
    target = spikewatch_target(f"ws://127.0.0.1:{port}/")
    return {
        "limits": {"max_connections": connections + _LIMIT_MARGIN},
        "prober": {"workers": workers, "event_loop": loop},
        "targets": [
            {
                "name": target.name,
                "url": target.url,
                "handshake_timeout": target.handshake_timeout,
                "close_timeout": target.close_timeout,
                "welcome": {"match": target.welcome.match, "timeout": target.welcome.timeout},
                "echo": {
                    "payload": target.echo.payload,
                    "match": target.echo.match,
                    "timeout": target.echo.timeout,
                },
            }
        ],
        "scenarios": [
            {
                "name": "avalanche",
                "spike": {
                    "connections": connections,
                    "batches": batches,
                    "batch_interval": interval,
                },
                "baseline": {"probes": 5, "interval": 0.05},
                "recovery": {"probe_interval": 0.1, "consecutive": 3, "timeout": 10},
            }
        ],
    }


async def _run(document: dict[str, Any]) -> dict[str, Any]:
    # After the loop is chosen.
    from spikewatch.config import parse_config  # noqa: PLC0415
    from spikewatch.engine.from_config import make_prober, worker_pool  # noqa: PLC0415
    from spikewatch.engine.runner import ScenarioRun  # noqa: PLC0415

    config = parse_config(document)
    target, scenario = config.targets[0], config.scenarios[0]
    from spikewatch.heap import freeze_long_lived  # noqa: PLC0415

    pool = worker_pool(config.prober)
    if pool is not None:
        await pool.start()
    try:
        prober = make_prober(config, pool=pool)
        run = ScenarioRun(target, scenario, prober)
        freeze_long_lived()  # as spikewatch once does before its run
        report = await run.execute()
    finally:
        if pool is not None:
            await pool.close()
    result = report.result.as_dict()
    figures: dict[str, Any] = {"result": result}
    if run.spike_marks is not None:
        window = prober.monitor.report(*run.spike_marks)
        figures["spike_loop_lag_seconds"] = {"p99": window.loop_lag_p99, "max": window.loop_lag_max}
        timeline = result["detail"]["timeline_seconds"]
        spike_wall = timeline["t0"] - timeline["spike_start"]
        figures["spike_wall_seconds"] = spike_wall
        attempted = result["spike"]["attempted"]
        figures["rate_per_second"] = attempted / spike_wall if spike_wall > 0 else None
    return figures


def main(argv: list[str]) -> int:
    """Print one avalanche run's figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("batches", type=int)
    parser.add_argument("batch_interval", type=float, help="seconds between batches")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--workers", type=int, default=1, help="prober.workers (1: this process)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    document = config_document(
        args.port,
        args.connections,
        args.batches,
        args.batch_interval,
        workers=args.workers,
        loop=args.loop,
    )
    loop = new_loop(args.loop)
    try:
        figures = loop.run_until_complete(_run(document))
    finally:
        loop.close()
    figures.update(
        connections=args.connections,
        batches=args.batches,
        batch_interval=args.batch_interval,
        loop=args.loop,
        workers=args.workers,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
