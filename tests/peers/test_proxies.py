"""nginx and HAProxy in front of a real echo service: what each proxy did to the spike's
connections (its own access log) is the truth spikewatch's figures are checked against."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import RunResultKind
from tests.builders import write_config
from tests.conftest import scaled
from tests.peers import servers
from tests.peers.runs import config_of, document_of, made, run

#: An access line: "access <status> <upstream status> <request time s>" (tests/peers/nginx.conf).
NGINX_ACCESS = r"^access (\d{3}) (\S+) ([\d.]+)$"
#: A request time that only a tunnel nginx held until its 3 s read timeout can reach (the
#: probes take milliseconds). Below 3 s: nginx reads its clock once per loop turn, so on a
#: busy machine a timeout it set from a late reading can log under 3.0 s. One CI run found
#: 3 of 12 tunnels outside [3.0, 5.0) while spikewatch counted all 12 drops; the times
#: were not kept then, and the check now prints them.
TIMED_OUT_FROM = 2.5

#: An access line: "access <status> <termination state> <queue wait ms>" (haproxy.cfg).
HAPROXY_ACCESS = r"^access (-?\d+) (\S+) (-?\d+)$"


@pytest.fixture(scope="module")
def upstream() -> Iterator[servers.JsonPeer]:
    """The echo service behind the proxies: Python ``websockets``."""
    with servers.running(servers.python_echo()) as server:
        yield server


@pytest.fixture(scope="module")
def nginx(
    tmp_path_factory: pytest.TempPathFactory, upstream: servers.JsonPeer
) -> Iterator[servers.LogPeer]:
    """nginx with proxy_read_timeout 3s, started once for the module."""
    directory = tmp_path_factory.mktemp("nginx")
    with servers.running(servers.nginx(directory, upstream.port)) as server:
        yield server


@pytest.fixture(scope="module")
def haproxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: servers.JsonPeer
) -> Iterator[servers.LogPeer]:
    """HAProxy whose one server takes 4 connections at once, queueing others up to 1 s."""
    directory = tmp_path_factory.mktemp("haproxy")
    with servers.running(servers.haproxy(directory, upstream.port, "1s")) as server:
        yield server


@pytest.mark.slow
async def test_nginx_dropping_held_connections_fails_the_run_with_the_drops_counted(
    tmp_path: Path, nginx: servers.LogPeer, upstream: servers.JsonPeer
) -> None:
    """Held 8 s behind proxy_read_timeout 3s: nginx closes all 20 at ~3 s; the run fails on
    dropped_held with 20 drops, as nginx's log and the echo server count them."""
    log, echoed = nginx.mark(), upstream.mark()
    config = config_of(
        tmp_path,
        "echo",
        nginx.port,
        spike={"connections": 20},
        hold="8s",
        stable=None,
        thresholds={"success_ratio": 1.0, "dropped_held": 0},
    )
    result = await run(config)
    n = made(result)
    await nginx.until(lambda: len(nginx.matching(NGINX_ACCESS, log)) == n, f"{n} access lines")
    assert result.result == RunResultKind.FAILED
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 20}
    assert result.spike.held_dropped == 20
    assert result.spike.held_drop_example == "connection lost", "no close frame came"
    [verdict] = [t for t in result.thresholds if t.name == "dropped_held"]
    assert not verdict.passed
    assert result.as_dict()["spike"]["held_dropped"] == 20
    lines = nginx.matching(NGINX_ACCESS, log)
    assert [m[1] for m in lines] == ["101"] * n, "every upgrade went through"
    assert [m[2] for m in lines] == ["101"] * n, "as the upstream answered it"
    # nginx timed out each held tunnel after 3 s of silence; the probes closed at once.
    timed_out = [m for m in lines if float(m[3]) >= TIMED_OUT_FROM]
    assert len(timed_out) == result.spike.held_dropped
    assert all(float(m[3]) < 8.0 for m in timed_out), "dropped before the hold's end"
    await upstream.until(lambda: upstream.count("close", echoed) == n, f"{n} closes")
    codes = upstream.values("close", "code", echoed)
    assert codes.count(1006) == 20, "nginx cut the held tunnels without a close frame"
    assert codes.count(1000) == n - 20


async def test_haproxy_maxconn_4_lets_4_held_connections_in_and_the_queue_times_out(
    tmp_path: Path, haproxy: servers.LogPeer
) -> None:
    """12 held connections at `maxconn 4`: 4 upgrade, 8 wait in the queue and get HAProxy's
    503 after `timeout queue`; spikewatch's outcomes are HAProxy's statuses, phase by phase."""
    log = haproxy.mark()
    config = config_of(
        tmp_path,
        "echo",
        haproxy.port,
        spike={"connections": 12},
        hold="2s",
        stable=None,
        thresholds={"success_ratio": 1.0},
    )
    result = await run(config)
    n = made(result)
    await haproxy.until(lambda: len(haproxy.matching(HAPROXY_ACCESS, log)) == n, f"{n} lines")
    assert result.result == RunResultKind.FAILED
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 4, "http_status": 8}
    [group] = [g for g in result.errors if g.outcome == "http_status"]
    assert "503" in (group.example or ""), group.example
    lines = haproxy.matching(HAPROXY_ACCESS, log)
    statuses = [m[1] for m in lines]
    assert result.recovery is not None
    recovered = result.recovery.outcomes
    assert statuses.count("503") == 8 + recovered.get("http_status", 0)
    assert statuses.count("101") == result.baseline.ok + 4 + recovered.get("ok", 0)
    queued_out = [m for m in lines if m[1] == "503"]
    assert {m[2] for m in queued_out} == {"sQ"}, "each 503 is a queue timeout"
    assert all(int(m[3]) >= 1000 for m in queued_out), "after waiting `timeout queue`"


@pytest.mark.slow
def test_the_command_line_on_workers_reports_nginxs_drops_in_its_json(
    tmp_path: Path, nginx: servers.LogPeer
) -> None:
    """`spikewatch once --json` with 2 worker processes (uvloop, as the daemon runs): exit 1,
    and the run JSON's held_dropped and dropped_held verdict say what nginx's log says."""
    log = nginx.mark()
    document = document_of(
        "echo",
        nginx.port,
        spike={"connections": 12},
        hold="5s",
        stable=None,
        thresholds={"success_ratio": 1.0, "dropped_held": 0},
    )
    document["prober"] = {"workers": 2}
    path = write_config(tmp_path / "echo.yaml", document)
    argv = ["once", "--config", str(path), "--target", "echo", "--scenario", "echo-spike"]
    proc = subprocess.run(
        [sys.executable, "-m", "spikewatch", *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["result"] == "failed"
    assert result["spike"]["outcomes"] == {"ok": 12}
    assert result["spike"]["held_dropped"] == 12
    [verdict] = [t for t in result["thresholds"] if t["name"] == "dropped_held"]
    assert (verdict["passed"], verdict["value"]) == (False, 12), verdict
    n = result["baseline"]["probes"] + 12 + result["recovery"]["probes"]
    nginx.wait(lambda: len(nginx.matching(NGINX_ACCESS, log)) == n, 15.0, f"{n} access lines")
    lines = nginx.matching(NGINX_ACCESS, log)
    assert [m[1] for m in lines] == ["101"] * n
    times = sorted(float(m[3]) for m in lines)
    assert len([t for t in times if TIMED_OUT_FROM <= t < 5.0]) == 12, (
        "dropped at 3 s of 5",
        times,
    )
