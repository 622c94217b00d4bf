"""The run history across restarts of a real daemon process (storage.path set)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from spikewatch.daemon.lifecycle import STOPPED_REASON
from spikewatch.daemon.run_store import DB_NAME
from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.builders import daemon_document, reference_target, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess, metric_sum

TOKEN = "history-test-token-0123456789"


async def get_json(proc: DaemonProcess, path: str) -> tuple[int, Any]:
    status, _, raw = await proc.request("GET", path)
    return status, json.loads(raw)


async def stop(proc: DaemonProcess, signum: signal.Signals = signal.SIGTERM) -> None:
    proc.signal(signum)
    code = await proc.wait(15)
    assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    await proc.stop()


async def pages(proc: DaemonProcess, run_id: str) -> tuple[str, str]:
    """Return a run's page and its pair's page, both answered 200."""
    found = []
    for path in (f"/runs/{run_id}", "/targets/ref/quick"):
        status, _, raw = await proc.request("GET", path)
        assert status == 200, path
        found.append(raw.decode())
    run_page, pair_page = found
    assert '<line class="limit"' in run_page
    assert '<line class="t0"' in run_page
    assert f'<a href="/runs/{run_id}">' in pair_page
    return run_page, pair_page


def corrupt_storage(tmp_path: Path) -> Path:
    """Return a storage.path directory whose runs.sqlite3 is garbage, not SQLite."""
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_NAME).write_bytes(b"\x00garbage, not SQLite\xff" * 300)
    return state


async def test_a_finished_run_answers_after_a_restart(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """A run finished before SIGTERM answers 200, with the same result and timeline, and
    the same run and pair pages, after a restart, and the restarted daemon's last-run
    gauges come from it (its counters from zero)."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    # Never due while the test runs: the only run is the one asked for.
    never = {"cron": "0 0 1 1 *"}
    doc = daemon_document([reference_target(reference.url)], token_file=token, schedule=never)
    doc["storage"] = {"path": str(tmp_path / "state")}
    config = write_config(tmp_path / "c.yaml", doc)
    first = await DaemonProcess(config).start()
    try:
        run_id = await first.run_now("ref", "quick", TOKEN)
        before = await first.run_result(run_id, 30)
        assert before["state"] == "done"
        assert before["result"] == "passed"
        timeline = before["detail"]["timeline"]
        phases = [p["phase"] for p in timeline["probes"]]
        assert phases.count("baseline") == before["baseline"]["probes"]
        assert phases.count("recovery") == before["recovery"]["probes"]
        assert timeline["recovered_at"] >= timeline["t0"] > 0
        pages_before = await pages(first, run_id)
        await stop(first)
    finally:
        await first.stop()
    second = await DaemonProcess(config).start()
    try:
        status, after = await get_json(second, f"/api/v1/runs/{run_id}")
        assert status == 200
        assert after == before  # the timeline in its detail too
        # The run page (its chart) and the pair page are the same after the restart.
        assert await pages(second, run_id) == pages_before
        status, listing = await get_json(second, "/api/v1/runs?target=ref&result=passed")
        assert status == 200
        assert [r["id"] for r in listing["runs"]] == [run_id]
        values = await second.metric_values()
        ended = datetime.fromisoformat(before["started_at"]).timestamp()
        ended += before["duration_seconds"]
        assert metric_sum(values, "spikewatch_last_run_timestamp_seconds") == ended
        assert metric_sum(values, "spikewatch_last_run_success") == 1.0
        assert metric_sum(values, "spikewatch_runs_total") == 0.0
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


async def test_a_corrupt_database_stops_the_start_with_exit_2_naming_it(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """`spikewatch run` on a corrupt runs.sqlite3 exits 2 at once, naming the file."""
    state = corrupt_storage(tmp_path)
    doc = daemon_document([reference_target(reference.url)])
    doc["storage"] = {"path": str(state)}
    config = write_config(tmp_path / "c.yaml", doc)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spikewatch", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), scaled(20))
    assert proc.returncode == 2
    text = stderr.decode()
    assert f"storage.path: run history {state / DB_NAME}: not a usable database" in text
    assert "Traceback" not in text


async def test_fallback_memory_starts_on_a_corrupt_database_and_says_so(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """With storage.fallback: memory the daemon starts on a corrupt file, logs it, and serves."""
    state = corrupt_storage(tmp_path)
    doc = daemon_document([reference_target(reference.url)], schedule={"cron": "0 0 1 1 *"})
    doc["storage"] = {"path": str(state), "fallback": "memory"}
    config = write_config(tmp_path / "c.yaml", doc)
    proc = await DaemonProcess(config).start()
    try:
        line = await proc.wait_for_line(lambda text: "storage.fallback is memory" in text, 20)
        assert str(state / DB_NAME) in line
        status, listing = await get_json(proc, "/api/v1/runs")
        assert (status, listing["runs"]) == (200, [])
        await stop(proc)
    finally:
        await proc.stop()


async def test_a_storage_change_waits_for_the_next_restart(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """A reload that moves storage.path says it takes effect at restart, and keeps the old one."""
    doc = daemon_document([reference_target(reference.url)], schedule={"cron": "0 0 1 1 *"})
    doc["storage"] = {"path": str(tmp_path / "old")}
    config = write_config(tmp_path / "c.yaml", doc)
    proc = await DaemonProcess(config).start()
    try:
        doc["storage"] = {"path": str(tmp_path / "new")}
        write_config(config, doc)
        proc.signal(signal.SIGHUP)
        await proc.wait_for_line(lambda line: "config reloaded" in line, 10)
        assert proc.count("storage changed; it takes effect at the next restart") == 1
        assert (tmp_path / "old" / DB_NAME).is_file()
        assert not (tmp_path / "new").exists()
        await stop(proc)
    finally:
        await proc.stop()
