"""Shared test settings (one factor scales every timeout on slow machines) and fixtures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import pytest

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target

#: Multiply every test timeout by this (``SPIKEWATCH_TEST_TIMEOUT_FACTOR``) on slow machines.
TIMEOUT_FACTOR = float(os.environ.get("SPIKEWATCH_TEST_TIMEOUT_FACTOR", "1"))


#: How early a timer may fire as seen from time.monotonic(): uvloop (libuv) counts its
#: timers in whole milliseconds.
TIMER_GRAIN = 0.002


def scaled(seconds: float) -> float:
    """Return a test timeout scaled by the machine's factor."""
    return seconds * TIMEOUT_FACTOR


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on asyncio's loop; a module with ``RUN_ON_EVERY_EVENT_LOOP`` on uvloop too.

    uvloop is what the daemon runs on by default (spikewatch/engine/eventloop.py); the
    engine's own tests cover both, since TLS errors and transports differ between them.
    """
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    module = getattr(item, "module", None)
    if getattr(module, "RUN_ON_EVERY_EVENT_LOOP", False):
        import uvloop  # noqa: PLC0415 - only where asked for

        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
async def reference() -> AsyncIterator[RunningTarget]:
    """The reference target with its default knobs (welcome, echo, no degradation)."""
    async with await start_reference_target(TargetBehaviour()) as target:
        yield target
