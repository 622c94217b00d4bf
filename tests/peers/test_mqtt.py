"""The MQTT example against Debian's mosquitto with a websockets listener: its log of
clients connected and disconnected is the truth spikewatch's figures are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spikewatch.core.outcomes import RunResultKind
from tests.peers import servers
from tests.peers.runs import config_of, run, run_example

#: mosquitto's line for each CONNECT it accepted (MQTT 3.1.1 is "p2"; clean session "c1").
CONNECTED = r"^New client connected from 127\.0\.0\.1:\d+ as (auto-\S+) \(p2, c1, k60\)\.$"

#: mosquitto's line for each connection that ended (a DISCONNECT, or the socket closed).
ENDED = r"^Client (auto-\S+) (disconnected|closed its connection)\.$"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.LogPeer]:
    """mosquitto, started once for the module."""
    with servers.running(servers.mosquitto(tmp_path_factory.mktemp("mosquitto"))) as server:
        yield server


async def test_connect_connack_in_binary(tmp_path: Path, broker: servers.LogPeer) -> None:
    """A binary CONNECT answered by CONNACK 0 on every connection: mosquitto accepted
    each one, answered each PINGREQ, and saw each end."""
    result, n, mark = await run_example(tmp_path, "mqtt", broker, ENDED)
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 50}
    assert result.spike.message_rtt is not None, "CONNACK after CONNECT is the round trip"
    assert result.stable is not None
    assert (result.stable.opened, result.stable.dropped) == (2, 0)
    assert result.stable.message_rtt is not None
    connected = [m[1] for m in broker.matching(CONNECTED, mark)]
    assert len(connected) == n
    assert sorted(m[1] for m in broker.matching(ENDED, mark)) == sorted(connected)
    # Each PINGREQ sent reached mosquitto before its connection's end: the answered ones and
    # any still unanswered when the run closed the connection.
    pings = broker.matching(r"^Received PINGREQ from auto-", mark)
    assert len(pings) == result.stable.message_rtt.count + result.stable.unanswered


async def test_a_text_connect_is_not_mqtt(tmp_path: Path, broker: servers.LogPeer) -> None:
    """CONNECT sent as a text frame: mosquitto drops the connection and accepts no client;
    spikewatch names the step that waited for the CONNACK."""
    mark = broker.mark()
    config = config_of(
        tmp_path,
        "mqtt",
        broker.port,
        target={
            "conversation": [
                {"name": "connect", "send": {"text": "CONNECT"}},
                {"name": "connack", "expect": {"hex": "20 02 00 00"}, "others": "fail"},
            ],
            "keepalive": None,
        },
        stable=None,
        thresholds={"success_ratio": 1.0},
    )
    result = await run(config)
    assert result.result == RunResultKind.TARGET_DOWN
    [group] = result.errors
    assert (group.step, group.count) == ("connack", 3)
    assert broker.matching(CONNECTED, mark) == []
