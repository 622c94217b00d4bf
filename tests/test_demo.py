"""`spikewatch demo` as a newcomer runs it, and its target's changing spells."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.demo import build_demo_config, cycle_spells
from spikewatch.target import TargetBehaviour, start_reference_target
from tests.conftest import scaled


async def test_demo_serves_metrics_and_runs_within_seconds() -> None:
    """The demo prints where to look, runs both scenarios, and stops cleanly on SIGINT."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spikewatch",
        "demo",
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(scaled(20)):
            first = (await proc.stdout.readline()).decode()
            assert first.startswith("spikewatch demo is running"), first
            page = (await proc.stdout.readline()).decode()
        match = re.search(r"(http://\S+)/", page)
        assert match, page
        base = match.group(1)
        finished: set[str] = set()
        async with asyncio.timeout(scaled(60)):
            while finished != {"avalanche", "ramp"}:
                line = (await proc.stderr.readline()).decode()
                assert line, "demo exited early"
                if "run finished" in line:
                    finished.add(re.search(r"scenario=(\S+)", line).group(1))  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/api/v1/runs") as resp:
                runs = json.loads(await resp.read())["runs"]
            async with session.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
            async with session.get(f"{base}/") as resp:
                page_html = await resp.text()
        assert {r["scenario"] for r in runs if r.get("state") == "done"} == {"avalanche", "ramp"}
        runs_total = {
            (sample.labels["scenario"], sample.labels["result"]): sample.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "spikewatch_runs"
            for sample in family.samples
            if sample.name == "spikewatch_runs_total"
        }
        for scenario in ("avalanche", "ramp"):
            assert sum(v for (s, _), v in runs_total.items() if s == scenario) >= 1
        assert "reference" in page_html
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), scaled(10)) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_spells_cycle_healthy_slow_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo target turns slow-after-bursts, then capacity-limited, then healthy again."""
    async with await start_reference_target(TargetBehaviour()) as target:
        seen: list[TargetBehaviour] = []
        spell_over = asyncio.Event()
        reset = target.reset
        first = True

        async def reset_noting_the_spell() -> TargetBehaviour:
            # Each spell begins with a reset: what was in force until then is the last one.
            nonlocal first
            if not first:
                seen.append(target.behaviour)
                spell_over.set()
            first = False
            return await reset()

        monkeypatch.setattr(target, "reset", reset_noting_the_spell)
        task = asyncio.create_task(cycle_spells(target, random.Random(1), every=0.0))
        async with asyncio.timeout(scaled(5)):
            while len(seen) < 8:
                spell_over.clear()
                await spell_over.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert any(b.burst_threshold == 40 and b.recovery_delay > 0 for b in seen)
    assert any(b.capacity == 45 for b in seen)
    assert any(b.capacity is None and b.burst_threshold is None for b in seen)
    # Each spell is a version of its own: the demo shows version changes.
    assert {b.version for b in seen} == {"1.0", "1.1", "1.2"}


def test_embedded_config_is_valid(tmp_path: Path) -> None:
    """The embedded config validates like any user's, with the token read from its file."""
    token = tmp_path / "t"
    token.write_text("x" * 32)
    config = build_demo_config("ws://127.0.0.1:1/ws", "127.0.0.1:0", token)
    assert [s.name for s in config.scenarios] == ["avalanche", "ramp"]
    assert config.server.api_token is not None
