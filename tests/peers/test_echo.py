"""The plain echo example against Python ``websockets`` and Node ``ws``: their counts are
the truth spikewatch's figures are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import servers
from tests.peers.runs import run_example


@pytest.fixture(scope="module", params=["websockets", "ws"])
def echo(request: pytest.FixtureRequest) -> Iterator[servers.JsonPeer]:
    """An echo server, started once for the module (per server)."""
    start = servers.python_echo if request.param == "websockets" else servers.node_echo
    with servers.running(start()) as server:
        yield server


async def test_the_echo_example_passes_with_the_servers_counts(
    tmp_path: Path, echo: servers.JsonPeer
) -> None:
    """Every connection spikewatch made the server opened, echoed once, saw closed with 1000."""
    result, n, mark = await run_example(tmp_path, "echo", echo, "close")
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 50}
    assert result.spike.held_dropped == 0
    assert result.stable is not None
    assert (result.stable.opened, result.stable.dropped) == (2, 0)
    assert result.stable.message_rtt is not None
    assert echo.count("open", mark) == n
    keepalives = result.stable.message_rtt.count + result.stable.unanswered
    assert echo.count("message", mark) == n + keepalives, "one echo each, and each keepalive"
    assert echo.values("close", "code", mark) == [1000] * n
