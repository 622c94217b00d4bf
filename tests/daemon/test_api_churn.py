"""GET /api/v1/targets describes a churn scenario's shape (issue 13, item 6)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from spikewatch.config import parse_config
from spikewatch.daemon.api import create_app
from tests.daemon.fakes import FakeDaemonState


async def test_targets_describes_a_churn_by_its_rate_and_duration() -> None:
    """A churn scenario's shape is its kind, rate, duration and max_in_flight."""
    config = parse_config(
        {
            "targets": [{"name": "chat", "url": "ws://127.0.0.1:8765/ws"}],
            "scenarios": [
                {"name": "churn", "churn": {"rate": 50, "duration": "10s", "max_in_flight": 20}}
            ],
        }
    )
    app = create_app(FakeDaemonState(config))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.get("/api/v1/targets")
        assert response.status == 200
        body = await response.json()
    assert body["scenarios"][0]["shape"] == {
        "kind": "churn",
        "rate_per_second": 50.0,
        "duration_seconds": 10.0,
        "max_in_flight": 20,
    }
