"""``spikewatch demo``: the daemon on an embedded config against an in-process target.

The reference target cycles through a healthy spell, a spell in which it stays slow
for a few seconds after every burst, and a spell with a capacity limit, so that the
dashboards show recovery times and failed outcomes within the first minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spikewatch.config import SpikewatchConfig, parse_config
from spikewatch.daemon.lifecycle import Daemon, serve
from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9878"

#: How long each spell of the target's behaviour lasts.
SPELL_SECONDS = 40.0


def demo_document(target_url: str, listen: str, token_file: Path) -> dict[str, Any]:
    """Return the embedded config: two scenarios on a fast schedule against one target."""
    target = {
        "name": "reference",
        "url": target_url,
        "welcome": {"match": r'"type":\s*"welcome"', "timeout": "2s"},
        "echo": {"payload": '{"type":"ping","seq":{seq}}', "match": '"seq":\\s*{seq}'},
        "handshake_timeout": "3s",
        # Each spell of the target below is a "deploy" with its own version (issue 17).
        "version": {"header": "X-App-Version"},
    }
    recovery = {
        "probe_interval": "250ms",
        "consecutive": 3,
        "tolerance": 0.5,
        "slack": "5ms",
        "timeout": "20s",
    }
    return {
        "server": {"listen": listen, "api_token_file": str(token_file)},
        "limits": {"max_connections": 500, "max_concurrent_runs": 1},
        "targets": [target],
        "scenarios": [
            {
                "name": "avalanche",
                "schedule": {"every": "15s", "jitter": "2s"},
                "spike": {"connections": 60, "batches": 3, "batch_interval": "300ms"},
                "stable": {"connections": 5, "ping_interval": "500ms"},
                "baseline": {"probes": 5, "interval": "200ms"},
                "recovery": recovery,
                "thresholds": {
                    "success_ratio": 0.95,
                    "handshake_p95": "1s",
                    "recovery": "10s",
                    "dropped_stable": 0,
                },
            },
            {
                "name": "ramp",
                "schedule": {"every": "25s", "jitter": "2s"},
                "ramp": {"steps": [10, 20, 30], "step_interval": "1s"},
                "baseline": {"probes": 5, "interval": "200ms"},
                "recovery": recovery,
                "thresholds": {"success_ratio": 0.95, "recovery": "10s"},
            },
        ],
    }


@dataclass(frozen=True, slots=True)
class Spell:
    """One stretch of the target's behaviour."""

    name: str
    knobs: dict[str, Any]


def spells(rng: random.Random) -> itertools.cycle[Spell]:
    """Healthy, then slow after bursts (random length), then capacity-limited, forever;
    each a version of its own, as if each were a deploy."""
    slow = rng.uniform(2.0, 8.0)
    return itertools.cycle(
        [
            Spell("healthy (version 1.0)", {"version": "1.0"}),
            Spell(
                f"slow for {slow:.1f}s after each burst (version 1.1)",
                {
                    "burst_threshold": 40,
                    "recovery_delay": slow,
                    "slow_delay": 0.05,
                    "version": "1.1",
                },
            ),
            Spell(
                "capacity-limited to 45 connections (version 1.2)",
                {"capacity": 45, "version": "1.2"},
            ),
        ]
    )


async def cycle_spells(
    target: RunningTarget, rng: random.Random, every: float = SPELL_SECONDS
) -> None:
    """Change the target's behaviour every ``every`` seconds."""
    for spell in spells(rng):
        await target.reset()
        await target.set_behaviour(**spell.knobs)
        log.info("demo target: %s", spell.name)
        await asyncio.sleep(every)


def build_demo_config(target_url: str, listen: str, token_file: Path) -> SpikewatchConfig:
    """Validate the embedded config like any other."""
    return parse_config(demo_document(target_url, listen, token_file), source="<demo>")


async def run_demo(listen: str = DEFAULT_LISTEN, *, seed: int | None = None) -> None:
    """Start the reference target and the daemon; serve until SIGTERM or SIGINT."""
    rng = random.Random(seed)
    target = await start_reference_target(TargetBehaviour(), "127.0.0.1", 0)
    with tempfile.TemporaryDirectory(prefix="spikewatch-demo-") as tmp:
        token_file = Path(tmp) / "api-token"
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
        config = build_demo_config(target.url, listen, token_file)
        daemon = Daemon(config)
        cycler = asyncio.get_running_loop().create_task(cycle_spells(target, rng))
        try:
            started = asyncio.get_running_loop().create_task(serve(daemon))
            ready = asyncio.get_running_loop().create_task(daemon.wait_ready())
            await asyncio.wait({started, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if daemon.ready and daemon.bound is not None:
                host, port = daemon.bound
                base = f"http://{host}:{port}"
                print(
                    "spikewatch demo is running.\n"
                    f"  status page   {base}/\n"
                    f"  metrics       {base}/metrics\n"
                    f"  runs (JSON)   {base}/api/v1/runs\n"
                    f"  target        {target.url} (in this process; its /stats at "
                    f"{target.http_url}/stats)\n"
                    f"  API token     in {token_file} (for POST /api/v1/runs)\n"
                    "The first runs start within ~10 s; the target turns slow or "
                    f"capacity-limited every {SPELL_SECONDS:g} s. Ctrl-C stops.",
                    flush=True,
                )
            await started
        finally:
            cycler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cycler
            await target.close()
