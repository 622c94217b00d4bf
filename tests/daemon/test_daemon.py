"""The daemon as a real process: readiness, schedules, metrics, API, reload, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.builders import daemon_document, reference_target, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess
from tests.daemon.test_status_page_browser import run_chromium

TOKEN = "daemon-test-token-0123456789"

# The contract's metric table: name → (type, label names).
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "spikewatch_runs": ("counter", {"target", "scenario", "result"}),
    "spikewatch_connections": ("counter", {"target", "scenario", "phase", "outcome"}),
    "spikewatch_upgrade_status": ("counter", {"target", "scenario", "code"}),
    "spikewatch_handshake_duration_seconds": ("histogram", {"target", "scenario", "phase"}),
    "spikewatch_first_message_duration_seconds": ("histogram", {"target", "scenario", "phase"}),
    "spikewatch_message_rtt_seconds": ("histogram", {"target", "scenario", "phase"}),
    "spikewatch_recovery_duration_seconds": ("histogram", {"target", "scenario"}),
    "spikewatch_last_recovery_seconds": ("gauge", {"target", "scenario"}),
    "spikewatch_baseline_latency_seconds": ("gauge", {"target", "scenario"}),
    "spikewatch_last_spike_success_ratio": ("gauge", {"target", "scenario"}),
    "spikewatch_last_run_success": ("gauge", {"target", "scenario"}),
    "spikewatch_last_run_timestamp_seconds": ("gauge", {"target", "scenario"}),
    "spikewatch_next_run_timestamp_seconds": ("gauge", {"target", "scenario"}),
    "spikewatch_stable_connections_dropped": ("counter", {"target", "scenario"}),
    "spikewatch_threshold_failures": ("counter", {"target", "scenario", "threshold"}),
    "spikewatch_run_duration_seconds": ("histogram", {"target", "scenario"}),
    "spikewatch_spike_start_lateness_seconds": ("histogram", {"target", "scenario"}),
    "spikewatch_open_connections": ("gauge", set()),
    "spikewatch_event_loop_lag_seconds": ("histogram", set()),
    "spikewatch_prober_saturated": ("gauge", set()),
    "spikewatch_config_last_reload_successful": ("gauge", set()),
    "spikewatch_config_last_reload_success_timestamp_seconds": ("gauge", set()),
    "spikewatch_build_info": ("gauge", {"version"}),
}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
async def daemon(
    tmp_path: Path, reference: RunningTarget, token_file: Path
) -> AsyncIterator[DaemonProcess]:
    config = write_config(
        tmp_path / "c.yaml",
        daemon_document([reference_target(reference.url)], token_file=token_file),
    )
    proc = await DaemonProcess(config).start()
    yield proc
    proc.signal(signal.SIGTERM)
    assert await proc.wait(15) == 0
    await proc.stop()


async def test_ready_and_scheduled_runs_happen(daemon: DaemonProcess) -> None:
    """The daemon is ready within seconds and runs its scenario on schedule."""
    status, _, body = await daemon.request("GET", "/readyz")
    assert status == 200, body
    await daemon.wait_for_line(lambda line: "run finished" in line, 30)
    await daemon.wait_for_line(lambda line: daemon.count("run finished") >= 2, 30)
    status, _, body = await daemon.request("GET", "/api/v1/runs?target=ref")
    runs = json.loads(body)["runs"]
    assert status == 200
    done = [r for r in runs if r.get("state") == "done"]
    assert len(done) >= 2
    assert all(r["result"] == "passed" for r in done), done
    assert all(r["trigger"] == "schedule" for r in done)


async def test_every_contract_metric_is_present(daemon: DaemonProcess) -> None:
    """/metrics has every metric of the contract with its type and labels."""
    await daemon.wait_for_line(lambda line: "run finished" in line, 30)
    status, headers, body = await daemon.request("GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name, (kind, labels) in CONTRACT.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, name
        seen = {k for s in family.samples for k in s.labels if k not in {"le", "quantile"}}
        assert seen == labels, (name, seen)
    assert "process_resident_memory_bytes" in families
    runs = [
        s
        for s in families["spikewatch_runs"].samples
        if s.name == "spikewatch_runs_total" and s.labels["result"] == "passed"
    ]
    assert runs[0].value >= 1
    status, headers, body = await daemon.request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_api_auth_and_errors(daemon: DaemonProcess) -> None:
    """POST needs the bearer token; unknown pairs are 404, bad JSON 400."""
    body = {"target": "ref", "scenario": "quick"}
    status, headers, _ = await daemon.request("POST", "/api/v1/runs", json=body)
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")
    status, _, _ = await daemon.request("POST", "/api/v1/runs", json=body, token="wrong")
    assert status == 401
    status, _, raw = await daemon.request(
        "POST", "/api/v1/runs", json={"target": "nope", "scenario": "quick"}, token=TOKEN
    )
    assert status == 404
    assert "error" in json.loads(raw)
    status, _, raw = await daemon.request(
        "POST",
        "/api/v1/runs",
        data=b"{not json",
        token=TOKEN,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert "error" in json.loads(raw)
    # A real request: accepted (202), or 409 when the scheduler has it queued already.
    status, _, raw = await daemon.request("POST", "/api/v1/runs", json=body, token=TOKEN)
    assert status in (202, 409), raw
    if status == 202:
        run_id = json.loads(raw)["id"]
        status, _, raw = await daemon.request("GET", f"/api/v1/runs/{run_id}")
        assert status == 200
        assert json.loads(raw)["target"] == "ref"
    status, _, _ = await daemon.request("GET", "/api/v1/runs/does-not-exist")
    assert status == 404


async def test_post_is_forbidden_without_a_configured_token(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """Without server.api_token_file, POST endpoints answer 403 whatever is sent."""
    config = write_config(
        tmp_path / "c.yaml", daemon_document([reference_target(reference.url)], every="1h")
    )
    proc = await DaemonProcess(config).start()
    try:
        status, _, _ = await proc.request(
            "POST", "/api/v1/runs", json={"target": "ref", "scenario": "quick"}, token=TOKEN
        )
        assert status == 403
        status, _, _ = await proc.request("POST", "/-/reload", token=TOKEN)
        assert status == 403
    finally:
        proc.signal(signal.SIGTERM)
        assert await proc.wait(15) == 0


def reload_gauge(body: bytes) -> float:
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "spikewatch_config_last_reload_successful":
            return family.samples[0].value
    raise AssertionError("no reload gauge")


def lag_samples(body: bytes) -> float:
    """Return how many loop-lag samples the daemon has taken (the histogram's count)."""
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "spikewatch_event_loop_lag_seconds":
            return next(s.value for s in family.samples if s.name.endswith("_count"))
    raise AssertionError("no loop-lag histogram")


async def test_loop_lag_is_sampled_fast_only_during_runs(
    tmp_path: Path, reference: RunningTarget, token_file: Path
) -> None:
    """At rest the daemon samples at idle_lag_sample_interval; a run gets the fast cadence."""
    doc = daemon_document([reference_target(reference.url)], token_file=token_file, every="1h")
    doc["prober"] = {"idle_lag_sample_interval": "1h"}
    proc = await DaemonProcess(write_config(tmp_path / "c.yaml", doc)).start()
    try:
        _, _, body = await proc.request("GET", "/metrics")
        assert lag_samples(body) == 0  # the first idle sample is an hour away
        body_json = {"target": "ref", "scenario": "quick"}
        status, _, raw = await proc.request("POST", "/api/v1/runs", json=body_json, token=TOKEN)
        assert status == 202, raw
        await proc.wait_for_line(lambda line: "run finished" in line, 30)
        _, _, body = await proc.request("GET", "/metrics")
        during = lag_samples(body)
        assert during > 0
        # Kept: what is checked is an absence over time in another process (no sample
        # for 15 of the run's 20 ms intervals), and nothing signals an absence. The
        # cadence switch itself is tested without sleeping in tests/engine/test_prober_monitor.
        await asyncio.sleep(0.3)
        _, _, body = await proc.request("GET", "/metrics")
        assert lag_samples(body) <= during + 1  # at most the one the run had scheduled
    finally:
        proc.signal(signal.SIGTERM)
        assert await proc.wait(15) == 0


async def test_broken_reload_keeps_the_old_config(
    tmp_path: Path, reference: RunningTarget, token_file: Path
) -> None:
    """SIGHUP with a broken file is rejected and logged; the old config keeps running."""
    config = write_config(
        tmp_path / "c.yaml",
        daemon_document([reference_target(reference.url)], token_file=token_file),
    )
    proc = await DaemonProcess(config).start()
    try:
        config.write_text("targets: [ {name: BAD")
        proc.signal(signal.SIGHUP)
        await proc.wait_for_line(lambda line: "config reload rejected" in line, 10)
        _, _, body = await proc.request("GET", "/metrics")
        assert reload_gauge(body) == 0
        before = proc.count("run finished")
        await proc.wait_for_line(lambda line: proc.count("run finished") > before, 30)
        # A good file through the API applies: the gauge returns to 1.
        write_config(
            config,
            daemon_document([reference_target(reference.url)], token_file=token_file, every="2s"),
        )
        status, _, raw = await proc.request("POST", "/-/reload", token=TOKEN)
        assert status == 200, raw
        _, _, body = await proc.request("GET", "/metrics")
        assert reload_gauge(body) == 1
    finally:
        proc.signal(signal.SIGTERM)
        assert await proc.wait(15) == 0


async def test_sigterm_mid_spike_exits_0_and_closes_everything(tmp_path: Path) -> None:
    """SIGTERM while a spike is held open: exit 0 within 10 s, no connection left open."""
    async with await start_reference_target(TargetBehaviour()) as target:
        doc = daemon_document(
            [reference_target(target.url)],
            spike={"connections": 150, "batches": 3, "batch_interval": "200ms"},
            hold="60s",
        )
        config = write_config(tmp_path / "c.yaml", doc)
        proc = await DaemonProcess(config).start()
        try:
            await asyncio.wait_for(target.wait_for_stats(lambda s: s.open >= 100), scaled(30))
            loop = asyncio.get_running_loop()
            start = loop.time()
            proc.signal(signal.SIGTERM)
            assert await proc.wait(10) == 0
            assert loop.time() - start < 10
            stats = await asyncio.wait_for(target.wait_for_stats(lambda s: s.open == 0), scaled(5))
            assert stats.open == 0
        finally:
            await proc.stop()


async def test_status_page_in_a_real_browser_after_a_run(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    """After a real run, headless chromium shows the target and its last result on /."""
    await daemon.wait_for_line(lambda line: "run finished" in line, 30)
    dom = (await run_chromium(tmp_path, "--dump-dom", daemon.base + "/")).decode()
    assert "ref" in dom
    assert "quick" in dom
    assert "passed" in dom


async def test_sigterm_during_startup_is_not_lost(tmp_path: Path, reference: RunningTarget) -> None:
    """A SIGTERM sent while the process still loads its modules stops it with exit 0."""
    config = write_config(tmp_path / "c.yaml", daemon_document([reference_target(reference.url)]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",  # a stderr line as each module is loaded: where the process is
        "-m",
        "spikewatch",
        "run",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    # Any spikewatch module but the package and its entry point loads from inside the
    # entry point's import of the command line, after the early handler is installed and
    # with most of the ~0.8 s of imports still to come: the moment to send SIGTERM.
    # Without the early handler the default action would kill the process (-15).
    async with asyncio.timeout(scaled(10)):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, "the process ended before importing the command line"
            module = line.rpartition("|")[2].strip()
            if module.startswith("spikewatch.") and module != "spikewatch._entry":
                break
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), scaled(10))
    assert proc.returncode == 0, err.decode()
    # Printed only when SIGTERM interrupted the imports (the daemon's own handler logs).
    assert err.decode().splitlines()[-1] == "spikewatch: terminated", f"loaded: {module}"


async def test_sigterm_during_once_closes_its_connections(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """SIGTERM in the middle of `once` exits 1 (not passed) with every connection closed."""
    doc = daemon_document([reference_target(reference.url)], spike={"connections": 40}, hold="60s")
    config = write_config(tmp_path / "c.yaml", doc)
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open >= 40), scaled(20))
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), scaled(10))
    assert proc.returncode == 1
    stats = await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open == 0), scaled(5))
    assert stats.open == 0
