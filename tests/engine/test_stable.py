"""Tests for spikewatch.engine.stable: how the stable connections keep alive, and a loss
the prober causes itself (its receive budget) against a real loopback server."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikewatch.config import StableConfig
from spikewatch.core.outcomes import RunResultKind
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.runner import execute_run
from spikewatch.engine.stable import StableConnections
from spikewatch.protocol.frames import Opcode
from tests import hostile
from tests.builders import WELCOME, RunConfigs, make_prober


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


def budget_buster() -> hostile.HostileServer:
    """Welcome every connection; answer a WebSocket ping (only stable connections send
    them) with a binary frame declaring 100,000 bytes and sending 60,000 of them."""
    welcome = hostile.encode_frame(Opcode.TEXT, b'{"type": "welcome"}')
    unfinished = hostile.encode_frame(Opcode.BINARY, b"m" * 60_000, declared_length=100_000)

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        await connection.send(welcome)
        while True:
            frame = await hostile.read_frame(connection.reader)
            if frame.opcode == Opcode.CLOSE:
                await connection.send(hostile.encode_frame(Opcode.CLOSE, frame.payload[:2]))
                return
            if frame.opcode == Opcode.PING:
                await connection.send(unfinished)
                await connection.discard_until_eof()
                return

    return hostile.HostileServer(handle)


async def test_a_stable_connection_closed_by_the_receive_budget_is_the_probers_loss(
    tmp_path: Path,
) -> None:
    """Past limits.max_receive_buffer_bytes a stable connection is lost_to_prober, not
    dropped: the run is invalid (the self-check names it), not failed on dropped_stable."""
    write_config = RunConfigs(
        target={"welcome": {"match": WELCOME, "timeout": "2s"}, "close_timeout": "1s"},
        scenario={
            "baseline": {"probes": 3, "interval": "50ms"},
            "recovery": {"probe_interval": "100ms", "consecutive": 3, "timeout": "5s"},
        },
    )
    prober = make_prober(receive_budget_bytes=32_768)
    async with budget_buster() as server:
        config = write_config(
            tmp_path,
            server.url,
            {
                "spike": {"connections": 5},
                "stable": {"connections": 2, "ping_interval": "20ms", "mode": "ping"},
                "thresholds": {"dropped_stable": 0},
            },
        )
        report = await execute_run(config.targets[0], config.scenarios[0], prober)
    r = report.result
    assert r.stable is not None
    assert (r.stable.opened, r.stable.dropped, r.stable.lost_to_prober) == (2, 0, 2)
    assert r.stable.drop_example is None
    assert r.stable.as_dict()["lost_to_prober"] == 2
    assert r.result == RunResultKind.INVALID, r.message
    assert r.prober.reasons == (
        "2 stable connection(s) lost to the prober's receive buffers "
        "(limits.max_receive_buffer_bytes): its own limit, not dropped by the target",
    )
    assert [c.name for c in r.thresholds if not c.passed] == []
    assert prober.registry.receive_budget.held == 0
    assert prober.registry.open == 0
