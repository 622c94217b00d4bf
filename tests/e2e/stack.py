"""Real Prometheus and Alertmanager processes (Debian's packages) for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import scaled

#: Executable → the Debian package that carries it.
PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}


def executable(name: str) -> str:
    """Return the path of ``name``; fail (never skip) naming its package when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; the end-to-end tests need it: "
            f"apt-get install -y {PACKAGES[name]} (tests/run.sh installs it when run as root)"
        )
    return path


def free_port() -> int:
    """Return a loopback port nothing listens on (the servers below take ports as flags)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process with a readiness URL; its output goes to a log file."""

    def __init__(self, name: str, argv: list[str], ready_url: str, log: Path) -> None:
        self.name = name
        self.argv = argv
        self.ready_url = ready_url
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        async with asyncio.timeout(scaled(30)):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                try:
                    async with session.get(self.ready_url) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                # No event crosses the process boundary; poll readiness at a short interval.
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), scaled(10))
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def accelerated_rules(source: Path, dest: Path, interval: str = "1s") -> Path:
    """Copy the shipped rules with every group evaluated every ``interval``.

    Expressions, ``for:`` durations, labels and annotations stay exactly as shipped;
    only how often Prometheus evaluates a group changes, so a test sees results in
    seconds instead of after a production evaluation interval.
    """
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        group["interval"] = interval
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def prometheus(tmp: Path, *, scrape: str, rules: Path, alertmanager: str) -> Server:
    """Return a Prometheus scraping ``scrape`` every second with ``rules``."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "spikewatch", "static_configs": [{"targets": [scrape]}]}],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    argv = [
        executable("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return Server("prometheus", argv, f"http://127.0.0.1:{port}/-/ready", tmp / "prometheus.log")


def alertmanager(tmp: Path, *, webhook: str) -> Server:
    """Return an Alertmanager that delivers every alert to ``webhook`` within a second."""
    port = free_port()
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "target", "scenario"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": webhook}]}],
    }
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    argv = [
        executable("prometheus-alertmanager"),
        f"--config.file={path}",
        f"--storage.path={tmp / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return Server(
        "alertmanager", argv, f"http://127.0.0.1:{port}/-/ready", tmp / "alertmanager.log"
    )


async def query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    """Run an instant PromQL query; return its result list (fail on a query error)."""
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = json.loads(await resp.read())
    assert body.get("status") == "success", f"{expr!r}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
