"""End to end with the real servers: daemon → Prometheus (shipped rules) → Alertmanager.

The daemon runs against the reference target; Prometheus scrapes it with the shipped
rules; every query of every dashboard panel returns data; then the target is degraded
so that it does not recover, and the alert travels through Alertmanager to a webhook
receiver inside this test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.builders import write_config
from tests.e2e.stack import RECOVERY, REPO, RULES, alerting_stack, query, wait_for_query
from tests.grafana.dashboard_queries import panel_queries, render_query

DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

pytestmark = pytest.mark.slow


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
                "recovery": {**RECOVERY, "timeout": "3s"},
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
    config = write_config(tmp_path / "spikewatch.yaml", daemon_document(target.url))
    async with alerting_stack(tmp_path, config) as stack:
        session, daemon, hook, base = stack.session, stack.daemon, stack.hook, stack.base
        # A few runs, scraped: then every panel of every dashboard has data.
        await daemon.wait_for_line(lambda _: daemon.count("run finished") >= 3, 60)
        await wait_for_query(session, base, 'spikewatch_runs_total{result="passed"} > 1', 30)
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
