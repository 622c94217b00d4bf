"""The fixtures the daemon's HTTP tests share: a fake daemon state and a client of its app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from spikewatch.daemon.api import create_app
from tests.daemon.fakes import FakeDaemonState

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def state() -> FakeDaemonState:
    """Return a ready fake daemon with an API token configured (a module may override it)."""
    return FakeDaemonState()


@pytest.fixture
async def client(state: FakeDaemonState) -> AsyncIterator[Client]:
    """Serve the app of ``state`` on 127.0.0.1, port 0, and yield a client for it."""
    async with TestClient(TestServer(create_app(state), host="127.0.0.1", port=0)) as client:
        yield client
