"""End to end with a deploy: the reference target's version changes mid-way and gets slow.

The daemon reads the version from the 101 answers' X-App-Version; Prometheus scrapes it
with the shipped rules; Alertmanager delivers SpikewatchRecoveryRegressed to a webhook
here. The slow version's runs are attributed to it, target_info follows the change
without leaving the old series, and the alert names both versions (issue 17).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spikewatch.target import TargetBehaviour, start_reference_target
from tests.builders import write_config
from tests.e2e.stack import RECOVERY, alerting_stack, query, wait_for_query

pytestmark = pytest.mark.slow


def daemon_document(url: str, history: Path) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0"},
        "log": {"format": "text", "level": "info"},
        "storage": {"path": str(history)},
        "targets": [
            {
                "name": "ref",
                "url": url,
                "welcome": {"match": r'"type":\s*"welcome"'},
                "version": {"header": "X-App-Version"},
            }
        ],
        "scenarios": [
            {
                "name": "quick",
                "schedule": {"every": "4s"},
                "spike": {"connections": 20},
                "baseline": {"probes": 3, "interval": "50ms"},
                "recovery": {**RECOVERY, "timeout": "1.5s"},
            }
        ],
    }


async def test_a_slow_deploy_is_attributed_and_alerted_with_both_versions(tmp_path: Path) -> None:
    """Version 1.0 recovers; 2.0 never does: its runs carry 2.0, target_info moves to 2.0
    alone, and the regression alert through Alertmanager names 2.0 and 1.0."""
    async with await start_reference_target(TargetBehaviour(version="1.0")) as target:
        config = write_config(
            tmp_path / "spikewatch.yaml", daemon_document(target.url, tmp_path / "history")
        )
        async with alerting_stack(tmp_path, config) as stack:
            session, daemon, hook, base = stack.session, stack.daemon, stack.hook, stack.base
            # Version 1.0, recovering, long enough to be the 7-day median (a young
            # Prometheus has only these minutes), and seen while not regressed.
            await daemon.wait_for_line(lambda _: daemon.count("run finished") >= 6, 60)
            await wait_for_query(
                session,
                base,
                'spikewatch:target_version_not_regressed_timestamp_seconds{version="1.0"}',
            )
            # The deploy: 2.0, slow for 2.5 s after each spike (20 upgrades within a
            # second; the recovery probes' 10 do not count): slower than the 1.5 s
            # recovery timeout, over before the next run's baseline 4 s later.
            await target.set_behaviour(
                version="2.0",
                burst_threshold=15,
                burst_window=1.0,
                recovery_delay=2.5,
                slow_delay=0.3,
            )
            alert = await hook.wait_for("SpikewatchRecoveryRegressed", 60)
            assert alert["status"] == "firing"
            assert alert["labels"]["target"] == "ref"
            assert alert["annotations"]["version"] == "2.0"
            assert alert["annotations"]["version_before"] == "1.0"

            # target_info: one series, the new version; the old one is gone.
            info = await query(session, base, "spikewatch_target_info")
            assert [s["metric"]["version"] for s in info] == ["2.0"]
            exposition = await (await session.get(f"{daemon.base}/metrics")).text()
            assert 'spikewatch_target_info{target="ref",version="2.0"} 1.0' in exposition
            assert 'version="1.0"' not in exposition

            # The runs: every 2.0 run is the slow one; 1.0 runs recovered (but perhaps
            # the one under way at the deploy, whose baseline still answered 1.0).
            runs = f"{daemon.base}/api/v1/runs"
            new = (await (await session.get(runs, params={"version": "2.0"})).json())["runs"]
            old = (await (await session.get(runs, params={"version": "1.0"})).json())["runs"]
            finished_new = [r for r in new if r.get("recovery") is not None]
            assert finished_new
            assert all(not r["recovery"]["recovered"] for r in finished_new)
            recovered_old = [r for r in old if r["recovery"] and r["recovery"]["recovered"]]
            assert len(recovered_old) >= len(old) - 1 >= 1
