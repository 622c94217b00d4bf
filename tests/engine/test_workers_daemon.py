"""prober.workers in the real daemon and in ``spikewatch once``, as processes."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.target.server import RunningTarget
from tests.builders import daemon_document, reference_target, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess

TOKEN = "workers-test-token"
CONNECTIONS = 30


#: The daemon's one scenario, fired through two workers.
WITH_WORKERS: dict[str, Any] = {
    "prober": {"workers": 2},
    "every": "1h",
    "spike": {"connections": CONNECTIONS, "batches": 2, "batch_interval": "50ms"},
    "tolerance": 2.0,
}


def worker_children(pid: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(pid).children()
        if "spikewatch.engine.worker_main" in " ".join(p.cmdline())
    ]


async def test_daemon_fires_through_its_workers_and_stops_them(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """The daemon starts 2 workers, a run's spike goes through them into the metrics, and
    SIGTERM stops the workers with the daemon (exit 0)."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = write_config(
        tmp_path / "c.yaml",
        daemon_document([reference_target(reference.url)], token_file=token_file, **WITH_WORKERS),
    )
    daemon = await DaemonProcess(config).start()
    daemon.base = daemon.base.rstrip(",")  # the line may go on: "..., event loop asyncio"
    try:
        workers = worker_children(daemon.pid)
        assert len(workers) == 2
        status, _, raw = await daemon.request(
            "POST",
            "/api/v1/runs",
            json={"target": "ref", "scenario": "quick"},
            token=TOKEN,
        )
        assert status == 202, raw
        run_id = json.loads(raw)["id"]
        # The daemon marks the run done, then logs it: after the line, the API says so.
        await daemon.wait_for_line(lambda line: "run finished" in line, 30)
        _, _, raw = await daemon.request("GET", f"/api/v1/runs/{run_id}")
        run: dict[str, Any] = json.loads(raw)
        assert run["state"] == "done"
        assert run["result"] == "passed", run["message"]
        assert run["spike"]["outcomes"] == {"ok": CONNECTIONS}
        assert run["prober"]["rss_bytes"] > sum(w.memory_info().rss for w in workers)
        _, _, body = await daemon.request("GET", "/metrics")
        samples = {
            (s.name, s.labels.get("phase"), s.labels.get("outcome")): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == "spikewatch_connections_total"
        }
        assert samples[("spikewatch_connections_total", "spike", "ok")] == CONNECTIONS
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(15) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        await daemon.stop()


async def test_once_with_workers(tmp_path: Path, reference: RunningTarget) -> None:
    """``spikewatch once`` with prober.workers: 2 fires the whole spike through workers."""
    config = write_config(
        tmp_path / "c.yaml", daemon_document([reference_target(reference.url)], **WITH_WORKERS)
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spikewatch",
        "once",
        "--config",
        str(config),
        "--target",
        "ref",
        "--scenario",
        "quick",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), scaled(60))
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["spike"]["outcomes"] == {"ok": CONNECTIONS}
    assert "workers: 0: loop lag p99" in err.decode()
    assert "; 1: loop lag p99" in err.decode()
