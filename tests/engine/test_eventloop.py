"""Choosing the event loop: uvloop when present, asyncio's otherwise, never a silent miss."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from spikewatch.config import parse_config
from spikewatch.engine import eventloop
from spikewatch.errors import ConfigError, SpikewatchError

MINIMAL: dict[str, Any] = {
    "targets": [{"name": "t", "url": "ws://127.0.0.1:9/"}],
    "scenarios": [{"name": "s", "spike": {"connections": 1}}],
}


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import uvloop`` fail, as on a platform where it does not build."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # type: ignore[arg-type]


async def _running_loop_name() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    """The default install has uvloop, and ``auto`` takes it."""
    assert eventloop.uvloop_available()
    assert eventloop.run(_running_loop_name(), "auto") == "uvloop"
    assert eventloop.run(_running_loop_name(), "uvloop") == "uvloop"


def test_asyncio_can_be_chosen_explicitly() -> None:
    """``asyncio`` runs the stdlib loop even where uvloop is installed."""
    assert eventloop.run(_running_loop_name(), "asyncio") == "asyncio"


@pytest.mark.usefixtures("no_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    """Without uvloop, ``auto`` is the stdlib loop, and the same code runs on it."""
    assert not eventloop.uvloop_available()
    assert eventloop.loop_factory("auto") == ("asyncio", None)
    assert eventloop.run(_running_loop_name(), "auto") == "asyncio"


@pytest.mark.usefixtures("no_uvloop")
def test_insisting_on_a_missing_uvloop_is_a_config_error_naming_the_field() -> None:
    """``prober.event_loop: uvloop`` where uvloop is missing fails validation, by field."""
    with pytest.raises(ConfigError) as caught:
        parse_config({**MINIMAL, "prober": {"event_loop": "uvloop"}})
    assert "prober.event_loop" in str(caught.value)
    with pytest.raises(SpikewatchError, match="uvloop is not installed"):
        eventloop.loop_factory("uvloop")
