"""The run history across restarts of a real daemon process (storage.path set)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from spikewatch.daemon.lifecycle import STOPPED_REASON
from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.builders import daemon_document, reference_target, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess


async def get_json(proc: DaemonProcess, path: str) -> tuple[int, Any]:
    status, _, raw = await proc.request("GET", path)
    return status, json.loads(raw)


async def stop(proc: DaemonProcess, signum: signal.Signals = signal.SIGTERM) -> None:
    proc.signal(signum)
    code = await proc.wait(15)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    await proc.stop()


async def test_a_finished_run_answers_after_a_restart(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """A run finished before SIGTERM answers 200, with the same result, after a restart."""
    doc = daemon_document([reference_target(reference.url)], every="1h")
    doc["storage"] = {"path": str(tmp_path / "state")}
    config = write_config(tmp_path / "c.yaml", doc)
    first = await DaemonProcess(config).start()
    try:
        await first.wait_for_line(lambda line: "run finished" in line, 30)
        status, listing = await get_json(first, "/api/v1/runs")
        assert status == 200
        (run,) = listing["runs"]
        status, before = await get_json(first, f"/api/v1/runs/{run['id']}")
        assert status == 200
        assert before["state"] == "done"
        await stop(first)
    finally:
        await first.stop()
    second = await DaemonProcess(config).start()
    try:
        status, after = await get_json(second, f"/api/v1/runs/{run['id']}")
        assert status == 200
        assert after == before
        status, listing = await get_json(second, "/api/v1/runs?target=ref&limit=5")
        assert status == 200
        assert run["id"] in [r["id"] for r in listing["runs"]]
        await stop(second)
    finally:
        await second.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
async def test_a_run_cut_short_is_recorded_cancelled(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A run stopped mid-spike (SIGTERM, or SIGKILL) is cancelled, with why, after a restart."""
    async with await start_reference_target(TargetBehaviour()) as target:
        doc = daemon_document(
            [reference_target(target.url)], every="1h", spike={"connections": 20}, hold="60s"
        )
        doc["storage"] = {"path": str(tmp_path / "state")}
        config = write_config(tmp_path / "c.yaml", doc)
        first = await DaemonProcess(config).start()
        try:
            await asyncio.wait_for(target.wait_for_stats(lambda s: s.open >= 20), scaled(30))
            status, listing = await get_json(first, "/api/v1/runs")
            (run,) = listing["runs"]
            assert run["state"] == "running"
            await stop(first, signum)
        finally:
            await first.stop()
        second = await DaemonProcess(config).start()
        try:
            status, after = await get_json(second, f"/api/v1/runs/{run['id']}")
            assert status == 200
            assert after["state"] == "cancelled"
            assert after["reason"] == STOPPED_REASON
            assert after["result"] is None
            await stop(second)
        finally:
            await second.stop()
