"""Real Prometheus and Alertmanager processes (Debian's packages) for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess

REPO = Path(__file__).resolve().parents[2]

#: The daemon's scenario's recovery section in these tests, but for its timeout.
RECOVERY = {"probe_interval": "100ms", "consecutive": 3, "tolerance": 1.0, "slack": "20ms"}
RULES = REPO / "deploy" / "prometheus" / "rules" / "spikewatch.rules.yml"

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


async def wait_for_query(
    session: aiohttp.ClientSession, base: str, expr: str, timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until the instant query ``expr`` returns a non-empty result; return it."""
    async with asyncio.timeout(scaled(timeout)):
        while not (found := await query(session, base, expr)):
            # Prometheus scrapes and evaluates on its own interval; no event crosses into it.
            await asyncio.sleep(0.5)
    return found


class Webhook:
    """An Alertmanager webhook receiver: remembers every alert it is sent."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.alerts.extend(payload.get("alerts", []))
        self.changed.set()
        self.changed = asyncio.Event()
        return web.json_response({"status": "ok"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def wait_for(self, alertname: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(scaled(timeout)):
            while True:
                changed = self.changed
                for alert in self.alerts:
                    if alert["labels"].get("alertname") == alertname:
                        return alert
                await changed.wait()


@dataclass
class AlertingStack:
    """A daemon scraped by Prometheus (shipped rules, evaluated every second), whose
    Alertmanager delivers to ``hook``; ``base`` is Prometheus's URL."""

    session: aiohttp.ClientSession
    daemon: DaemonProcess
    hook: Webhook
    base: str


@asynccontextmanager
async def alerting_stack(tmp: Path, config: Path) -> AsyncIterator[AlertingStack]:
    """Start the daemon on ``config``, Alertmanager and Prometheus; at the end stop them
    all and check that the daemon exits 0 on SIGTERM."""
    hook = Webhook()
    await hook.start()
    daemon = await DaemonProcess(config).start()
    servers: list[Server] = []
    try:
        async with aiohttp.ClientSession() as session:
            am = alertmanager(tmp, webhook=hook.url)
            await am.start(session)
            servers.append(am)
            am_address = am.ready_url.removeprefix("http://").removesuffix("/-/ready")
            rules = accelerated_rules(RULES, tmp / "rules.yml")
            scrape = daemon.base.removeprefix("http://")
            prom = prometheus(tmp, scrape=scrape, rules=rules, alertmanager=am_address)
            await prom.start(session)
            servers.append(prom)
            yield AlertingStack(session, daemon, hook, prom.ready_url.removesuffix("/-/ready"))
    finally:
        for server in reversed(servers):
            await server.stop()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(15) == 0
        await daemon.stop()
        if hook.runner is not None:
            await hook.runner.cleanup()
