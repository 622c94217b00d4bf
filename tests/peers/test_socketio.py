"""The Socket.IO example (raw Engine.IO 4 transport) against socket.io 4 on Node: its
connection / heartbeat / disconnect events, with their reasons, are the truth spikewatch's
figures are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import RunResultKind
from tests.peers import servers
from tests.peers.runs import config_of, made, run, run_example


@pytest.fixture(scope="module")
def socketio() -> Iterator[servers.JsonPeer]:
    """Socket.IO with its own defaults (a ping every 25 s, 20 s to answer), once a module."""
    with servers.running(servers.socketio()) as server:
        yield server


@pytest.fixture(scope="module")
def quick_socketio() -> Iterator[servers.JsonPeer]:
    """Socket.IO pinging every 300 ms with 200 ms to answer, once a module."""
    with servers.running(servers.socketio(300, 200)) as server:
        yield server


@pytest.mark.slow
async def test_an_event_round_trip_with_connections_alive_60s_through_heartbeats(
    tmp_path: Path, socketio: servers.JsonPeer
) -> None:
    """40 → 40, an echo event and its echo; held and stable connections kept 60 s (past the
    45 s Socket.IO drops a silent client) by answering each '2' with '3': Socket.IO saw every
    connection, its heartbeats answered, and each disconnect was the client's own close."""
    result, n, mark = await run_example(tmp_path, "socketio", socketio, "disconnect")
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 20}
    assert result.spike.held_dropped == 0
    assert result.spike.message_rtt is not None
    assert result.stable is not None
    assert (result.stable.opened, result.stable.dropped) == (3, 0)
    assert result.stable.message_rtt is not None
    assert socketio.count("engine_open", mark) == n
    assert socketio.count("connection", mark) == n
    assert socketio.values("disconnect", "reason", mark) == ["transport close"] * n
    # Each held and stable connection lived past two pings (at 25 s and 50 s).
    assert socketio.count("heartbeat", mark) >= 2 * (20 + 3)
    # Each keepalive sent reached Socket.IO before its connection's end (Node reads in order):
    # the answered ones and any still unanswered when the run closed the connection.
    keepalives = result.stable.message_rtt.count + result.stable.unanswered
    assert socketio.count("echo", mark) == n + keepalives
    assert socketio.count("ack", mark) == keepalives, "each keepalive acked"


async def test_without_heartbeats_socketio_drops_every_held_connection(
    tmp_path: Path, quick_socketio: servers.JsonPeer
) -> None:
    """No answer to '2': Socket.IO drops each held and stable connection with 'ping timeout';
    spikewatch counts the same drops and fails the run on them."""
    mark = quick_socketio.mark()
    config = config_of(
        tmp_path,
        "socketio",
        quick_socketio.port,
        target={"heartbeats": []},
        spike={"connections": 10},
        hold="2s",
        stable={"connections": 2, "ping_interval": "5s", "mode": "message"},
    )
    result = await run(config)
    n = made(result)
    await quick_socketio.until(
        lambda: quick_socketio.count("disconnect", mark) == n, f"{n} disconnects"
    )
    assert result.result == RunResultKind.FAILED
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 10}
    assert result.stable is not None
    reasons = quick_socketio.values("disconnect", "reason", mark)
    assert reasons.count("ping timeout") == result.spike.held_dropped + result.stable.dropped
    assert (result.spike.held_dropped, result.stable.dropped) == (10, 2)
    assert quick_socketio.count("heartbeat", mark) == 0
