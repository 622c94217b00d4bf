"""End to end with the real servers: daemon → Prometheus (shipped rules) → Alertmanager.

The daemon runs against the reference target; Prometheus scrapes it with the shipped
rules; every query of every dashboard panel returns data; then the target is degraded
so that it does not recover, and the alert travels through Alertmanager to a webhook
receiver inside this test.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.builders import write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess
from tests.e2e.stack import Server, accelerated_rules, alertmanager, prometheus, query
from tests.grafana.dashboard_queries import panel_queries, render_query

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules" / "spikewatch.rules.yml"
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

pytestmark = pytest.mark.slow


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


def daemon_document(url: str) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "log": {"format": "text", "level": "info"},
        "targets": [
            {
                "name": "ref",
                "url": url,
                "welcome": {"match": r'"type":\s*"welcome"'},
                "echo": {"payload": '{"seq":{seq}}', "match": '"seq":{seq}'},
                # The per-version panels have data only for a target that reports one.
                "version": {"header": "X-App-Version"},
            }
        ],
        "scenarios": [
            {
                "name": "quick",
                "schedule": {"every": "3s"},
                "spike": {"connections": 20, "batches": 2, "batch_interval": "100ms"},
                "stable": {"connections": 3, "ping_interval": "200ms"},
                "baseline": {"probes": 3, "interval": "50ms"},
                "recovery": {
                    "probe_interval": "100ms",
                    "consecutive": 3,
                    "tolerance": 1.0,
                    "slack": "20ms",
                    "timeout": "3s",
                },
                "thresholds": {"success_ratio": 0.9, "recovery": "2s", "dropped_stable": 0},
            }
        ],
    }


@pytest.fixture
async def target() -> AsyncIterator[RunningTarget]:
    async with await start_reference_target(TargetBehaviour(version="1.0")) as running:
        yield running


async def test_dashboards_have_data_and_the_alert_reaches_alertmanager(
    tmp_path: Path, target: RunningTarget
) -> None:
    """Every dashboard query returns data; a target that does not recover is alerted."""
    assert RULES.exists(), f"{RULES} missing"
    assert DASHBOARDS, "no dashboards"
    hook = Webhook()
    await hook.start()
    config = write_config(tmp_path / "spikewatch.yaml", daemon_document(target.url))
    daemon = await DaemonProcess(config).start()
    scrape = daemon.base.removeprefix("http://")
    servers: list[Server] = []
    try:
        async with aiohttp.ClientSession() as session:
            am = alertmanager(tmp_path, webhook=hook.url)
            await am.start(session)
            servers.append(am)
            am_address = am.ready_url.removeprefix("http://").removesuffix("/-/ready")
            rules = accelerated_rules(RULES, tmp_path / "rules.yml")
            prom = prometheus(tmp_path, scrape=scrape, rules=rules, alertmanager=am_address)
            await prom.start(session)
            servers.append(prom)
            base = prom.ready_url.removesuffix("/-/ready")

            # A few runs, scraped: then every panel of every dashboard has data.
            await daemon.wait_for_line(lambda _: daemon.count("run finished") >= 3, 60)
            async with asyncio.timeout(scaled(30)):
                while not await query(session, base, 'spikewatch_runs_total{result="passed"} > 1'):
                    # Prometheus scrapes on its own interval; no event crosses into it.
                    await asyncio.sleep(0.5)
            empty = []
            checked = 0
            for path in DASHBOARDS:
                dashboard = json.loads(path.read_text())
                for title, expr in panel_queries(dashboard):
                    runnable = render_query(
                        expr,
                        target="ref",
                        scenario="quick",
                        datasource_uid="spikewatch-prometheus",
                        rate_interval="15s",
                    )
                    checked += 1
                    if not await query(session, base, runnable):
                        empty.append(f"{path.name}: {title}: {runnable}")
            assert checked >= 10
            assert not empty, "panels without data:\n" + "\n".join(empty)

            # Degrade: slow for 10 minutes after any burst, so the next run cannot recover.
            await target.set_behaviour(
                burst_threshold=10, burst_window=1.0, recovery_delay=600, slow_delay=0.3
            )
            alert = await hook.wait_for("SpikewatchTargetDidNotRecover", 90)
            assert alert["status"] == "firing"
            assert alert["labels"]["target"] == "ref"
            assert alert["labels"]["scenario"] == "quick"
            assert alert["labels"]["severity"] == "critical"
            assert alert["annotations"]["runbook_url"].endswith("#spikewatchtargetdidnotrecover")
            firing = await query(session, base, 'ALERTS{alertname="SpikewatchTargetDidNotRecover"}')
            assert firing
    finally:
        for server in reversed(servers):
            await server.stop()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(15) == 0
        await daemon.stop()
        if hook.runner is not None:
            await hook.runner.cleanup()
