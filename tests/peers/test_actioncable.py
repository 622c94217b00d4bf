"""The Action Cable example against Debian's ruby-actioncable under puma: its connect /
subscribed / echo / unsubscribed / disconnect callbacks are the truth spikewatch's figures
are checked against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import servers
from tests.peers.runs import run_example


@pytest.fixture(scope="module")
def cable() -> Iterator[servers.JsonPeer]:
    """Action Cable under puma, started once for the module."""
    with servers.running(servers.actioncable()) as server:
        yield server


async def test_a_channel_message_after_subscribing(tmp_path: Path, cable: servers.JsonPeer) -> None:
    """welcome → subscribe → confirm_subscription → message: every connection Action Cable
    connected, subscribed, answered once (and once per keepalive), then unsubscribed."""
    result, n, mark = await run_example(tmp_path, "actioncable", cable, "disconnect")
    assert result.spike is not None
    assert result.spike.outcomes == {"ok": 30}
    assert result.spike.first_message is not None, "the welcome times the first message"
    assert result.spike.message_rtt is not None
    assert result.stable is not None
    assert (result.stable.opened, result.stable.dropped) == (2, 0)
    assert result.stable.message_rtt is not None
    assert cable.count("connect", mark) == n
    assert cable.count("subscribed", mark) == n
    assert cable.count("unsubscribed", mark) == n
    # One echo per conversation and per keepalive answered; a keepalive still unanswered when
    # the run closed its connection may or may not have been performed before the close.
    answered = result.stable.message_rtt.count
    assert answered <= cable.count("echo", mark) - n <= answered + result.stable.unanswered
