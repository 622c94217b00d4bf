"""Tests for spikewatch.engine.stable: how the stable connections keep alive (no sockets)."""

from __future__ import annotations

import pytest

from spikewatch.config import StableConfig
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.stable import StableConnections


@pytest.mark.parametrize(
    ("mode", "echo", "chosen"),
    [
        ("auto", True, "echo"),
        ("auto", False, "ping"),
        ("ping", True, "ping"),
        ("echo", False, "echo"),
    ],
)
async def test_auto_echoes_only_when_the_target_echoes_and_a_chosen_mode_wins(
    mode: str, echo: bool, chosen: str
) -> None:
    """auto echoes when the target has an echo, else pings; ping or echo as configured."""
    config = StableConfig.model_validate({"connections": 1, "mode": mode})
    stable = StableConnections(RunInFlight(lambda _: None), config, echo=echo)
    assert stable.mode == chosen
