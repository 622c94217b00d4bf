"""The loop exception handler that condenses accept failures at EMFILE."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

import pytest

from spikewatch.daemon.lifecycle import AcceptErrorFilter, Daemon

EMFILE = OSError(24, "Too many open files")


@dataclass
class Stopping:
    """The one thing the filter asks of the daemon."""

    stopping: bool = False


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def accept_failed() -> dict[str, Any]:
    return {"message": "socket.accept() out of system resource", "exception": EMFILE}


def test_accept_failures_are_logged_once_a_second_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """128 failed accepts in one burst give one warning; a second later, one more."""
    clock = Clock()
    handler = AcceptErrorFilter(cast("Daemon", Stopping()), clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(128):
                handler(loop, accept_failed())
            clock.now += 1.0
            handler(loop, accept_failed())
    finally:
        loop.close()
    lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 2
    assert all(r.exc_info is None for r in lines)
    assert "Too many open files" in lines[0].getMessage()


def test_stale_accept_retries_are_dropped_only_while_stopping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """'Invalid file descriptor' after shutdown closed the listener is dropped; before, kept."""
    daemon = Stopping()
    handler = AcceptErrorFilter(cast("Daemon", daemon), Clock())
    stale = {
        "message": "Exception in callback",
        "exception": ValueError("Invalid file descriptor: -1"),
    }
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR):
            handler(loop, stale)
            assert len(caplog.records) == 1  # not stopping: the default handler logs it
            daemon.stopping = True
            handler(loop, stale)
            assert len(caplog.records) == 1
            handler(loop, {"message": "something else", "exception": RuntimeError("boom")})
            assert len(caplog.records) == 2
    finally:
        loop.close()
