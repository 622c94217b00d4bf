"""The graphql-ws example against graphql-ws 6 on Node: its onConnect / onSubscribe /
onNext / onClose hooks are the truth spikewatch's figures are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import RunResultKind
from tests.peers import servers
from tests.peers.runs import config_of, run, run_example


@pytest.fixture(scope="module")
def graphql() -> Iterator[servers.JsonPeer]:
    """graphql-ws, started once for the module."""
    with servers.running(servers.graphql_ws()) as server:
        yield server


async def test_a_subscription_receives_its_first_next(
    tmp_path: Path, graphql: servers.JsonPeer
) -> None:
    """connection_init → ack → subscribe → next on every connection: each one graphql-ws
    acknowledged, subscribed and sent a next, and closed with 1000."""
    result, n, mark = await run_example(tmp_path, "graphql-ws", graphql, "close")
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 30}
    assert result.spike.message_rtt is not None
    assert result.spike.message_rtt.count == 30
    assert result.stable is not None
    assert (result.stable.opened, result.stable.dropped) == (2, 0)
    assert result.stable.message_rtt is not None, "graphql-ws's pong answered each ping"
    assert graphql.count("open", mark) == n
    assert graphql.count("connect", mark) == n, "one connection_init each (no 4429)"
    assert graphql.count("subscribe", mark) == n
    assert graphql.count("next", mark) >= n
    assert graphql.values("close", "code", mark) == [1000] * n
    assert graphql.values("ws_close", "code", mark) == [1000] * n


async def test_a_subscribe_before_init_is_closed_4401_and_named(
    tmp_path: Path, graphql: servers.JsonPeer
) -> None:
    """Skipping connection_init: graphql-ws closes 4401; spikewatch names the step and code."""
    mark = graphql.mark()
    document = config_of(tmp_path, "graphql-ws", graphql.port)
    steps = [
        s.model_dump(by_alias=True, exclude_none=True)
        for s in document.targets[0].conversation or []
    ]
    config = config_of(
        tmp_path,
        "graphql-ws",
        graphql.port,
        target={"conversation": steps[2:], "keepalive": None},
        stable=None,
        spike={"connections": 5},
        thresholds={"success_ratio": 1.0},
    )
    result = await run(config)
    assert result.result == RunResultKind.TARGET_DOWN
    [group] = result.errors
    assert (group.outcome, group.step, group.count) == ("closed", "next", 3)
    assert "4401" in (group.example or ""), group.example
    await graphql.until(lambda: graphql.count("close", mark) == 3, "3 closes")
    assert graphql.values("close", "code", mark) == [4401] * 3
    assert graphql.count("connect", mark) == 0
