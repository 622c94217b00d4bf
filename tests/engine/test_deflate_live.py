"""permessage-deflate against real servers on loopback: Python's websockets (compression
"deflate", and None, which declines) and Node's ws (bench/node_modules, from ``npm ci`` in
bench/). Each server's own record of what it negotiated per connection is the truth the
client's figures are checked against."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.extensions.permessage_deflate import PerMessageDeflate

from spikewatch.config import parse_config
from spikewatch.core.attempt import DEFLATE_DECLINED, Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.connection import ClientConnection, open_connection
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import build_connection_spec
from tests.builders import RunConfigs, make_prober
from tests.conftest import scaled
from tests.engine.test_runner import FAST_RECOVERY, run

BENCH = Path(__file__).resolve().parents[2] / "bench"
ECHO = {"payload": '{"seq":{seq},"pad":"' + "abc" * 200 + '"}', "match": '"seq":{seq}'}


@dataclass
class PyServer:
    """A websockets echo server and the extensions it agreed per connection."""

    url: str
    agreed: list[list[Any]] = field(default_factory=list)


@asynccontextmanager
async def websockets_server(compression: str | None) -> AsyncIterator[PyServer]:
    record: list[list[Any]] = []

    async def echo(ws: ServerConnection) -> None:
        record.append(list(ws.protocol.extensions))
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        yield PyServer(f"ws://127.0.0.1:{port}/", record)


@dataclass
class NodeServer:
    """A Node ws echo server (bench/deflate_target.js) and its per-connection lines."""

    url: str
    process: asyncio.subprocess.Process

    async def lines(self, n: int) -> list[dict[str, Any]]:
        """Read the server's next ``n`` JSON lines."""
        assert self.process.stdout is not None
        out = []
        for _ in range(n):
            line = await asyncio.wait_for(self.process.stdout.readline(), scaled(10))
            out.append(json.loads(line))
        return out


@asynccontextmanager
async def node_server(per_message_deflate: object) -> AsyncIterator[NodeServer]:
    node = shutil.which("node")
    if node is None or not (BENCH / "node_modules" / "ws").exists():
        pytest.fail("needs node and bench/node_modules/ws: run `npm ci` in bench/")
    process = await asyncio.create_subprocess_exec(
        node,
        str(BENCH / "deflate_target.js"),
        "0",
        json.dumps(per_message_deflate),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), scaled(10))).decode()
        assert line.startswith("listening "), line
        yield NodeServer(f"ws://127.0.0.1:{int(line.split()[1])}/", process)
    finally:
        process.terminate()
        await process.wait()


async def attempt(
    url: str, compression: dict[str, Any] | None, *, echo: dict[str, str] = ECHO
) -> tuple[Attempt, ClientConnection]:
    """One attempt with an echo through a spec built from config, as a run builds it."""
    target: dict[str, Any] = {"name": "t", "url": url, "echo": echo}
    if compression is not None:
        target["compression"] = compression
    config = parse_config(
        {"targets": [target], "scenarios": [{"name": "s", "spike": {"connections": 1}}]}
    )
    spec = build_connection_spec(config.targets[0], "127.0.0.1")
    registry = ConnectionRegistry(10)
    a = Attempt(Phase.BASELINE, 1)
    conn = await open_connection(spec, a, registry)
    assert conn is not None
    await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert registry.open == 0
    return a, conn


# -- websockets ---------------------------------------------------------------------------


async def test_websockets_deflate_round_trip() -> None:
    """Offered and accepted: the echo round trip succeeds, and websockets' own record says
    permessage-deflate with the window bits it answered (its defaults: 12 and 12)."""
    async with websockets_server("deflate") as server:
        a, conn = await attempt(server.url, {"deflate": True})
        a2, _ = await attempt(server.url, {"deflate": True})
    assert a.outcome == Outcome.OK, a.detail
    assert a2.outcome == Outcome.OK, a2.detail
    assert a.detail == ""
    assert a.rtt is not None
    assert len(server.agreed) == 2
    for (ext,) in server.agreed:
        assert isinstance(ext, PerMessageDeflate)
        assert (ext.remote_max_window_bits, ext.local_max_window_bits) == (12, 12)
        assert not ext.remote_no_context_takeover
    assert conn._session._deflater is not None
    assert conn._session._deflater.holding  # context takeover: the compressor was kept


async def test_websockets_fragmented_compressed_welcome() -> None:
    """websockets sends the welcome as three compressed fragments (RSV1 on the first only):
    the client reassembles and inflates it, then echoes."""

    async def welcome_then_echo(ws: ServerConnection) -> None:
        assert ws.protocol.extensions  # agreed, so the fragments are compressed
        await ws.send(['{"type":', ' "welcome", "pad": "' + "w" * 300, '"}'])
        async for message in ws:
            await ws.send(message)

    target: dict[str, Any] = {
        "name": "t",
        "url": "ws://127.0.0.1:1/",
        "welcome": {"match": '"type": "welcome"'},
        "echo": ECHO,
        "compression": {"deflate": True},
    }
    async with serve(welcome_then_echo, "127.0.0.1", 0, compression="deflate") as server:
        target["url"] = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        config = parse_config(
            {"targets": [target], "scenarios": [{"name": "s", "spike": {"connections": 1}}]}
        )
        registry = ConnectionRegistry(10)
        a = Attempt(Phase.BASELINE, 1)
        spec = build_connection_spec(config.targets[0], "127.0.0.1")
        conn = await open_connection(spec, a, registry)
        assert conn is not None
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert a.outcome == Outcome.OK, a.detail
    assert a.first_message is not None
    assert conn._session.deflate is not None


async def test_websockets_honours_what_the_client_asked() -> None:
    """client_max_window_bits 10 and server_no_context_takeover reach websockets' record."""
    compression = {"client_max_window_bits": 10, "server_no_context_takeover": True}
    async with websockets_server("deflate") as server:
        a, _ = await attempt(server.url, compression)
    assert a.outcome == Outcome.OK, a.detail
    ((ext,),) = server.agreed
    assert ext.remote_max_window_bits == 10  # what the client compresses with
    assert ext.local_no_context_takeover  # the server compresses each message alone


async def test_websockets_without_compression_declines() -> None:
    """compression=None: the server takes no extension, the attempt succeeds uncompressed
    and says the offer was declined."""
    async with websockets_server(None) as server:
        a, conn = await attempt(server.url, {"deflate": True})
    assert a.outcome == Outcome.OK, a.detail
    assert a.detail == DEFLATE_DECLINED
    assert server.agreed == [[]]
    assert conn._session._deflater is None


async def test_a_run_counts_declined_offers(tmp_path: Path) -> None:
    """A whole run against a declining server: every successful attempt is counted in the
    run JSON's detail.deflate_declined; against an accepting one the key is absent."""
    configs = RunConfigs(
        target={"echo": ECHO, "compression": {"deflate": True}},
        scenario={"baseline": {"probes": 2, "interval": "50ms"}, "recovery": FAST_RECOVERY},
    )
    async with websockets_server(None) as declining:
        config = configs(tmp_path, declining.url, {"spike": {"connections": 5}})
        result = (await run(config, make_prober())).result
    assert result.result == RunResultKind.PASSED, result.message
    # Every connection the server accepted was one successful attempt, each one counted.
    assert result.deflate_declined == len(declining.agreed) > 7
    assert result.as_dict()["detail"]["deflate_declined"] == result.deflate_declined
    async with websockets_server("deflate") as accepting:
        config = configs(tmp_path, accepting.url, {"spike": {"connections": 5}})
        result = (await run(config, make_prober())).result
    assert result.result == RunResultKind.PASSED, result.message
    assert result.deflate_declined == 0
    assert "deflate_declined" not in result.as_dict()["detail"]
    assert all(len(ext) == 1 for ext in accepting.agreed)


# -- Node ws ------------------------------------------------------------------------------


async def test_node_ws_deflate_round_trip() -> None:
    """Node ws with perMessageDeflate: the echo succeeds; ws saw the offer and agreed."""
    async with node_server(True) as server:
        a, conn = await attempt(server.url, {"deflate": True})
        opened, closed = await server.lines(2)
    assert a.outcome == Outcome.OK, a.detail
    assert opened["offered"] == "permessage-deflate; client_max_window_bits"
    assert opened["agreed"] == {}  # ws's defaults: nothing to restrict
    assert closed == {"closed": 1000}
    assert conn._session._deflater is not None


async def test_node_ws_with_no_context_takeover_both_ways() -> None:
    """Both no_context_takeover parameters offered; ws's agreement carries both, and the
    client keeps no zlib object between messages."""
    compression = {
        "client_no_context_takeover": True,
        "server_no_context_takeover": True,
        "server_max_window_bits": 10,
    }
    async with node_server(True) as server:
        a, conn = await attempt(server.url, compression)
        (opened,) = await server.lines(1)
    assert a.outcome == Outcome.OK, a.detail
    assert opened["agreed"] == {
        "server_no_context_takeover": True,
        "client_no_context_takeover": True,
        "server_max_window_bits": 10,
    }
    deflater = conn._session._deflater
    assert deflater is not None
    assert not deflater.holding


async def test_node_ws_without_deflate_declines() -> None:
    """perMessageDeflate: false: ws agrees to nothing; the attempt succeeds, noted declined."""
    async with node_server(False) as server:
        a, _ = await attempt(server.url, {"deflate": True})
        (opened,) = await server.lines(1)
    assert a.outcome == Outcome.OK, a.detail
    assert a.detail == DEFLATE_DECLINED
    assert opened["agreed"] is None


async def test_node_ws_message_past_max_decompressed_bytes() -> None:
    """An echo that decompresses past max_decompressed_bytes: protocol_error, and ws's own
    record has the connection closed with 1009."""
    echo = {"payload": '{"seq":{seq},"pad":"' + "z" * 5000 + '"}', "match": '"seq":{seq}'}
    async with node_server(True) as server:
        a, _ = await attempt(
            server.url, {"deflate": True, "max_decompressed_bytes": 1000}, echo=echo
        )
        _, closed = await server.lines(2)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert a.detail == "message decompresses to more than max_decompressed_bytes=1000"
    assert closed == {"closed": 1009}
