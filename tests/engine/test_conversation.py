"""Conversations against real servers on loopback, written here with ``websockets``.

Each server counts what it saw (opens, good answers, bad ones, binary frames); those
counts are the truth spikewatch's figures are checked against.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from spikewatch.config import parse_config
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.engine.connection import ClientConnection, Keepalive, open_connection
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import execute_run
from spikewatch.engine.spec import ConnectionSpec, build_connection_spec
from spikewatch.engine.worker_messages import target_from_wire, target_to_wire
from spikewatch.engine.worker_pool import WorkerPool
from tests.builders import RunConfigs, make_prober
from tests.conftest import scaled

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True

Handler = Callable[[ServerConnection, "Counts"], Awaitable[None]]


@dataclass
class Counts:
    """What a test server saw."""

    opens: int = 0
    good: int = 0
    bad: int = 0
    binary: int = 0
    heartbeats_answered: int = 0
    dropped: int = 0
    closes: list[int | None] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def bump(self, name: str) -> None:
        """Count one more ``name`` and wake whoever waits on the counts."""
        setattr(self, name, getattr(self, name) + 1)
        self.changed.set()

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` holds (each count wakes the check)."""
        async with asyncio.timeout(scaled(10)):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, Counts]]:
    """Serve ``handler`` on a free loopback port; yield its url and its counts."""
    counts = Counts()

    async def handle(ws: ServerConnection) -> None:
        counts.opens += 1
        try:
            await handler(ws, counts)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            counts.closes.append(ws.close_code)
            counts.changed.set()

    async with serve(handle, "127.0.0.1", 0, compression=None, ping_interval=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/", counts


def spec_of(url: str, target: dict[str, Any]) -> ConnectionSpec:
    """Return the spec of a target config (validated like a config file)."""
    config = parse_config(
        {
            "targets": [{"name": "t", "url": url, **target}],
            "scenarios": [{"name": "s", "spike": {"connections": 1}}],
        },
        source="tests/engine/test_conversation.py",
    )
    return build_connection_spec(config.targets[0], "127.0.0.1")


@pytest.fixture
def registry() -> ConnectionRegistry:
    return ConnectionRegistry(1000)


async def attempts(spec: ConnectionSpec, registry: ConnectionRegistry, n: int) -> list[Attempt]:
    """Make ``n`` attempts at once and wait until every connection is closed."""
    made = [Attempt(Phase.SPIKE, conn) for conn in range(1, n + 1)]
    conns = await asyncio.gather(*(open_connection(spec, a, registry) for a in made))
    for conn in conns:
        assert conn is not None
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert registry.open == 0
    return made


# -- a session id captured and sent back -----------------------------------------------------


async def session_server(ws: ServerConnection, counts: Counts) -> None:
    """Hello with a session id; expect it back; then echo events with their seq."""
    sid = secrets.token_hex(8)
    await ws.send(json.dumps({"type": "hello", "sid": sid}))
    auth = json.loads(await ws.recv())
    if auth != {"op": "auth", "sid": sid}:
        counts.bad += 1
        await ws.close(4001, "bad session")
        return
    counts.good += 1
    await ws.send(json.dumps({"op": "ok", "sid": sid}))
    async for message in ws:
        event = json.loads(message)
        await ws.send(json.dumps({"op": "echo", "seq": event["seq"], "sid": sid}))


SESSION = {
    "conversation": [
        {"name": "hello", "expect": {"json": {"type": "hello"}, "capture": {"sid": "sid"}}},
        {"name": "auth", "send": {"text": '{"op": "auth", "sid": "{sid}"}'}},
        {"name": "authed", "expect": {"match": '"op": "ok", "sid": "{sid}"'}},
        {"name": "event", "send": {"text": '{"op": "echo", "seq": {seq}}'}},
        {"name": "echoed", "expect": {"match": '"seq": {seq}, "sid": "{sid}"'}},
    ]
}


async def test_a_captured_session_id_goes_back_and_every_step_is_timed(
    registry: ConnectionRegistry,
) -> None:
    """A 3-step protocol with a capture: ok for every connection, as the server counts."""
    async with server(session_server) as (url, counts):
        made = await attempts(spec_of(url, SESSION), registry, 5)
    assert [a.outcome for a in made] == [Outcome.OK] * 5, [a.detail for a in made]
    assert (counts.opens, counts.good, counts.bad) == (5, 5, 0)
    for a in made:
        assert a.first_message is not None
        assert a.rtt is not None
        assert a.latency is not None
        assert a.handshake is not None
        assert a.handshake + a.first_message + a.rtt <= a.latency + 1e-9
    assert counts.closes == [1000] * 5


async def test_a_wrong_capture_fails_at_the_step_that_waits_for_the_answer(
    registry: ConnectionRegistry,
) -> None:
    """Sending another session id: the server closes 4001; the step label is 'authed'."""
    wrong = {
        "conversation": [
            {"name": "hello", "expect": {"json": {"type": "hello"}}},
            {"name": "auth", "send": {"text": '{"op": "auth", "sid": "nope"}'}},
            {"name": "authed", "expect": {"match": '"op": "ok"'}},
        ]
    }
    async with server(session_server) as (url, counts):
        made = await attempts(spec_of(url, wrong), registry, 3)
    assert [(a.outcome, a.step) for a in made] == [(Outcome.CLOSED, "authed")] * 3
    assert made[0].detail == "the peer closed with code 4001 (bad session) during step 'authed'"
    assert (counts.good, counts.bad) == (0, 3)


# -- binary -------------------------------------------------------------------------------

CONNECT = bytes.fromhex("10 0c 00 04 4d 51 54 54 04 02 00 3c 00 00")


async def binary_server(ws: ServerConnection, counts: Counts) -> None:
    """An MQTT-like server: a binary CONNECT is answered with a binary CONNACK."""
    message = await ws.recv()
    if isinstance(message, bytes) and message == CONNECT:
        counts.binary += 1
        await ws.send(bytes.fromhex("20 02 00 00"))
    else:
        counts.bad += 1
        await ws.send("text, not binary")
    await ws.wait_closed()


async def test_binary_send_and_hex_prefix_expect(registry: ConnectionRegistry) -> None:
    """A binary CONNECT goes out as a binary frame; the CONNACK matches by hex prefix."""
    target = {
        "conversation": [
            {"name": "connect", "send": {"hex": "10 0c 00 04 4d 51 54 54 04 02 00 3c 00 00"}},
            {"name": "connack", "expect": {"hex": "20 02 00"}, "others": "fail"},
        ]
    }
    async with server(binary_server) as (url, counts):
        made = await attempts(spec_of(url, target), registry, 4)
    assert [a.outcome for a in made] == [Outcome.OK] * 4, [a.detail for a in made]
    assert (counts.opens, counts.binary, counts.bad) == (4, 4, 0)
    assert all(a.rtt is not None for a in made)


async def test_a_text_answer_never_matches_a_hex_expect(registry: ConnectionRegistry) -> None:
    """With others: fail, a text message where binary is expected fails the step at once."""
    target = {
        "conversation": [
            {"name": "connect", "send": {"text": "CONNECT"}},
            {"name": "connack", "expect": {"hex": "20 02"}, "others": "fail"},
        ]
    }
    async with server(binary_server) as (url, counts):
        made = await attempts(spec_of(url, target), registry, 2)
    assert [(a.outcome, a.step) for a in made] == [(Outcome.UNEXPECTED_MESSAGE, "connack")] * 2
    assert made[0].detail == "connack did not match hex '20 02': 'text, not binary'"
    assert counts.bad == 2
    assert counts.closes == [1008, 1008]


def token_server(token: str) -> Handler:
    """Hello with a token and a subscription id; a binary 'c0 <token> <seq>' is answered
    with a JSON 'next' for that subscription, anything else with 'bad'."""

    async def handle(ws: ServerConnection, counts: Counts) -> None:
        sub = f"s-{token}"
        await ws.send(json.dumps({"type": "hello", "token": token, "sub": sub}))
        async for message in ws:
            if message == bytes.fromhex(f"c0 {token} 01"):
                counts.bump("good")
                await ws.send(json.dumps({"type": "next", "sub": sub, "n": 1}))
            else:
                counts.bump("bad")
                await ws.send('{"type":"bad"}')

    return handle


TOKEN = {
    "conversation": [
        {
            "name": "hello",
            "expect": {"json": {"type": "hello"}, "capture": {"token": "token", "sub": "sub"}},
        },
        {"name": "sub", "send": {"hex": "c0 {token} {seq}"}},
        {"name": "next", "expect": {"json": {"type": "next", "sub": "{sub}"}}, "timeout": "1s"},
    ]
}


async def test_captures_fill_a_hex_send_and_a_json_value(registry: ConnectionRegistry) -> None:
    """A captured hex token and {seq} fill a binary send; a captured id a JSON value."""
    async with server(token_server("a1b2")) as (url, counts):
        made = await attempts(spec_of(url, TOKEN), registry, 3)
    assert [a.outcome for a in made] == [Outcome.OK] * 3, [a.detail for a in made]
    assert (counts.opens, counts.good, counts.bad) == (3, 3, 0)


async def test_a_capture_that_is_not_hex_fails_the_send_step(
    registry: ConnectionRegistry,
) -> None:
    """A token that is not hex bytes fails at the hex send's step, naming the capture."""
    async with server(token_server("x-1")) as (url, counts):
        made = await attempts(spec_of(url, TOKEN), registry, 2)
    assert [(a.outcome, a.step) for a in made] == [(Outcome.UNEXPECTED_MESSAGE, "sub")] * 2
    assert made[0].detail == "step 'sub' cannot be sent: {token} is 'x-1', not hex bytes"
    assert (counts.good, counts.bad) == (0, 0)
    assert counts.closes == [1008, 1008]


# -- a graphql-ws-like init / ack ----------------------------------------------------------


async def graphql_server(ws: ServerConnection, counts: Counts) -> None:
    """graphql-ws's shape: connection_init first (else 4401), then a subscription's next."""
    init = json.loads(await ws.recv())
    if init.get("type") != "connection_init":
        counts.bad += 1
        await ws.close(4401, "Unauthorized")
        return
    await ws.send(json.dumps({"type": "connection_ack"}))
    subscribe = json.loads(await ws.recv())
    if subscribe.get("type") != "subscribe":
        counts.bad += 1
        await ws.close(4400, "Bad")
        return
    counts.good += 1
    await ws.send(json.dumps({"type": "ka"}))
    payload = {"data": {"tick": {"n": 1, "who": "server"}}}
    await ws.send(json.dumps({"id": subscribe["id"], "type": "next", "payload": payload}))
    await ws.wait_closed()


GRAPHQL: dict[str, Any] = {
    "subprotocols": ["graphql-transport-ws"],
    "conversation": [
        {"name": "init", "send": {"text": '{"type":"connection_init","payload":{}}'}},
        {"name": "ack", "expect": {"json": {"type": "connection_ack"}}, "others": "fail"},
        {
            "name": "subscribe",
            "send": {
                "text": '{"id":"{conn}","type":"subscribe",'
                '"payload":{"query":"subscription { tick { n } }"}}'
            },
        },
        {
            "name": "next",
            "expect": {
                "json": {"type": "next", "payload.data.tick.n": 1},
                "capture": {"who": "payload.data.tick.who"},
            },
            "measure": "round_trip",
        },
    ],
}


async def test_graphql_ws_like_init_ack_then_first_next(registry: ConnectionRegistry) -> None:
    """connection_init → ack, subscribe → next (a keepalive 'ka' passed over)."""
    async with server(graphql_server) as (url, counts):
        made = await attempts(spec_of(url, GRAPHQL), registry, 3)
    assert [a.outcome for a in made] == [Outcome.OK] * 3, [a.detail for a in made]
    assert (counts.opens, counts.good, counts.bad) == (3, 3, 0)


# -- application heartbeats through a hold ---------------------------------------------------


def pinging_server(interval: float, grace: float) -> Handler:
    """A Socket.IO-like server: '0' on open, then '2' every ``interval``; no '3' within
    ``grace`` drops the client (close 4000)."""

    async def handle(ws: ServerConnection, counts: Counts) -> None:
        await ws.send('0{"sid":"x"}')
        while True:
            await asyncio.sleep(interval)
            await ws.send("2")
            try:
                async with asyncio.timeout(grace):
                    while await ws.recv() != "3":
                        pass
            except TimeoutError:
                await ws.close(4000, "ping timeout")
                counts.bump("dropped")
                return
            counts.bump("heartbeats_answered")

    return handle


async def hold(
    spec: ConnectionSpec, registry: ConnectionRegistry, counts: Counts, n: int, answers: int
) -> list[ClientConnection]:
    """Open ``n`` held connections; return once the server counted ``answers`` heartbeats
    answered, or dropped one."""
    conns = []
    for conn in range(1, n + 1):
        c = await open_connection(spec, Attempt(Phase.SPIKE, conn), registry, keep_open=True)
        assert c is not None
        assert c.attempt.outcome == Outcome.OK, c.attempt.detail
        conns.append(c)
    await counts.until(lambda: counts.heartbeats_answered >= answers or counts.dropped > 0)
    return conns


@pytest.mark.parametrize("heartbeats", [True, False])
async def test_heartbeats_keep_held_connections_alive(
    registry: ConnectionRegistry, heartbeats: bool
) -> None:
    """Answering '2' with '3' keeps every held connection; without the rule all drop."""
    target: dict[str, Any] = {"conversation": [{"name": "open", "expect": {"match": "^0"}}]}
    if heartbeats:
        target["heartbeats"] = [{"when": {"match": "^2$"}, "answer": {"text": "3"}}]
    async with server(pinging_server(0.05, 0.2)) as (url, counts):
        conns = await hold(spec_of(url, target), registry, counts, 3, answers=9)
        if heartbeats:
            assert counts.dropped == 0
            assert all(c.lost_at is None for c in conns)
            for c in conns:
                c.close()
        else:
            async with asyncio.timeout(scaled(5)):
                for c in conns:
                    await c.wait_closed()
        for c in conns:
            await asyncio.wait_for(c.wait_closed(), scaled(5))
    if heartbeats:
        assert counts.heartbeats_answered >= 9
        assert counts.closes == [1000] * 3
    else:
        assert counts.dropped == 3
        assert all(c.lost_reason == "the peer closed with code 4000 (ping timeout)" for c in conns)


async def slow_subscription_server(ws: ServerConnection, counts: Counts) -> None:
    """Open, then on '40' ping ('2') and confirm ('40') only once the ping is answered."""
    await ws.send('0{"sid":"x"}')
    if await ws.recv() != "40":
        counts.bump("bad")
        return
    await ws.send("2")
    async with asyncio.timeout(scaled(2)):
        answer = await ws.recv()
    if answer != "3":
        counts.bump("bad")
        return
    counts.bump("heartbeats_answered")
    await ws.send("40")
    counts.bump("good")
    await ws.wait_closed()


async def test_a_ping_while_a_step_waits_is_answered(registry: ConnectionRegistry) -> None:
    """The server's '2' before its confirmation is answered and does not fail others: fail."""
    target = {
        "conversation": [
            {"name": "open", "expect": {"match": "^0"}},
            {"name": "connect", "send": {"text": "40"}},
            {"name": "connected", "expect": {"match": "^40$"}, "others": "fail"},
        ],
        "heartbeats": [{"when": {"match": "^2$"}, "answer": {"text": "3"}}],
    }
    async with server(slow_subscription_server) as (url, counts):
        made = await attempts(spec_of(url, target), registry, 3)
        await counts.until(lambda: len(counts.closes) == 3)
    assert [a.outcome for a in made] == [Outcome.OK] * 3, [a.detail for a in made]
    assert (counts.opens, counts.heartbeats_answered, counts.good, counts.bad) == (3, 3, 3, 0)
    assert counts.closes == [1000] * 3


# -- the stable keepalive ------------------------------------------------------------------


async def test_the_keepalive_is_sent_not_the_conversation(registry: ConnectionRegistry) -> None:
    """A stable connection sends the keepalive each interval: the init is sent only once."""
    target = {
        **GRAPHQL,
        "conversation": GRAPHQL["conversation"][:2],
        "keepalive": {"send": {"text": '{"type":"ping"}'}, "expect": {"json": {"type": "pong"}}},
    }
    inits = 0

    async def handle(ws: ServerConnection, counts: Counts) -> None:
        nonlocal inits
        async for message in ws:
            kind = json.loads(message)["type"]
            if kind == "connection_init":
                inits += 1
                await ws.send('{"type":"connection_ack"}')
            elif kind == "ping":
                counts.good += 1
                await ws.send('{"type":"pong"}')

    rtts: list[float] = []
    three = asyncio.Event()

    def on_rtt(rtt: float) -> None:
        rtts.append(rtt)
        if len(rtts) >= 3:
            three.set()

    keepalive = Keepalive(0.02, 1.0, "echo", on_rtt)
    async with server(handle) as (url, counts):
        conn = await open_connection(
            spec_of(url, target), Attempt(Phase.STABLE, 1), registry, keepalive=keepalive
        )
        assert conn is not None
        assert conn.attempt.outcome == Outcome.OK, conn.attempt.detail
        await asyncio.wait_for(three.wait(), scaled(5))
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert inits == 1
    assert counts.good >= 3
    assert len(rtts) == counts.good or len(rtts) == counts.good - 1
    assert conn.lost_at is None


# -- what the spec compiles, and what a worker is sent --------------------------------------


def test_declared_measures_and_the_short_forms_extras_compile() -> None:
    """Declared measures are kept; a welcome/echo target's keepalive replaces its echo's."""
    spec = spec_of(
        "ws://127.0.0.1:1/",
        {
            "conversation": [
                {"expect": {"match": "a"}},
                {"expect": {"match": "b"}, "measure": "first_message"},
                {"send": {"text": "c"}},
                {"expect": {"match": "d"}},
            ]
        },
    )
    assert spec.conversation is not None
    assert (spec.conversation.first_message, spec.conversation.round_trip) == (1, 3)
    short = spec_of(
        "ws://127.0.0.1:1/",
        {
            "echo": {"payload": "p", "match": "p"},
            "heartbeats": [{"when": {"hex": "09"}, "answer": {"hex": "0a"}}],
            "keepalive": {"send": {"text": "k"}, "expect": {"match": "k"}},
        },
    )
    assert short.conversation is not None
    assert [s.name for s in short.conversation.steps] == ["echo", "echo"]
    assert len(short.conversation.heartbeats) == 1
    keepalive = short.conversation.keepalive
    assert keepalive is not None
    assert keepalive.send.render(1, 1, {}) == b"k"
    echo_only = spec_of(
        "ws://127.0.0.1:1/", {"echo": {"payload": "p", "match": "p"}, "heartbeats": []}
    )
    assert echo_only.conversation is not None
    assert echo_only.conversation.keepalive is not None
    with_rule = spec_of(
        "ws://127.0.0.1:1/",
        {
            "echo": {"payload": "p", "match": "p"},
            "heartbeats": [{"when": {"match": "x"}, "answer": {"text": "y"}}],
        },
    )
    assert with_rule.conversation is not None
    assert with_rule.conversation.keepalive is not None, "the echo stays the keepalive"


def test_a_worker_gets_the_same_conversation() -> None:
    """The target travels to a worker as JSON and validates back equal (json matchers too)."""
    config = parse_config(
        {
            "targets": [{"name": "t", "url": "ws://127.0.0.1:1/", **GRAPHQL}],
            "scenarios": [{"name": "s", "spike": {"connections": 1}}],
        }
    )
    target = config.targets[0]
    assert target_from_wire(target_to_wire(target)) == target


# -- whole runs: a Socket.IO-like service, on the daemon's process and on workers ----------------


def socketio_like(interval: float, grace: float) -> Handler:
    """Engine.IO's shape: '0{sid}' on open, '40' answered '40', '42[...]' events echoed with
    the sid checked, and '2' every ``interval`` that must be answered '3' within ``grace``."""

    async def handle(ws: ServerConnection, counts: Counts) -> None:
        sid = secrets.token_hex(6)
        await ws.send(f'0{{"sid":"{sid}","pingInterval":50}}')
        if await ws.recv() != "40":
            counts.bump("bad")
            await ws.close(4401, "connect first")
            return
        await ws.send("40")
        answered = asyncio.Event()

        async def pinger() -> None:
            while True:
                await asyncio.sleep(interval)
                answered.clear()
                await ws.send("2")
                try:
                    await asyncio.wait_for(answered.wait(), grace)
                except TimeoutError:
                    await ws.close(4000, "ping timeout")
                    counts.bump("dropped")
                    return
                counts.bump("heartbeats_answered")

        task = asyncio.create_task(pinger())
        try:
            async for message in ws:
                if message == "3":
                    answered.set()
                elif isinstance(message, str) and message.startswith('42["echo"'):
                    counts.bump("good" if f'"sid":"{sid}"' in message else "bad")
                    await ws.send(message)
        finally:
            task.cancel()

    return handle


SOCKETIO: dict[str, Any] = {
    "conversation": [
        {"name": "open", "expect": {"match": '^0\\{"sid":"(?P<sid>[^"]+)"'}},
        {"name": "connect", "send": {"text": "40"}},
        {"name": "connected", "expect": {"match": "^40$"}, "others": "fail"},
        {"name": "event", "send": {"text": '42["echo",{"seq":{seq},"sid":"{sid}"}]'}},
        {"name": "echoed", "expect": {"match": '^42\\["echo",\\{"seq":{seq},"sid":"{sid}"'}},
    ],
    "heartbeats": [{"when": {"match": "^2$"}, "answer": {"text": "3"}}],
    "keepalive": {
        "send": {"text": '42["echo",{"seq":{seq},"sid":"{sid}"}]'},
        "expect": {"match": '^42\\["echo",\\{"seq":{seq},'},
    },
}

RUN = RunConfigs(
    target=SOCKETIO,
    scenario={
        "baseline": {"probes": 3, "interval": "50ms"},
        "spike": {"connections": 20, "batches": 2, "batch_interval": "50ms"},
        "hold": "500ms",
        "stable": {"connections": 2, "ping_interval": "50ms", "mode": "message"},
        "recovery": {"probe_interval": "50ms", "consecutive": 2, "timeout": "5s", "slack": "50ms"},
        "thresholds": {"success_ratio": 1.0},
    },
)


@pytest.mark.slow
@pytest.mark.parametrize("on_workers", [False, True])
async def test_a_socketio_like_run_passes_with_the_servers_counts(
    tmp_path: Path, on_workers: bool
) -> None:
    """Held spike and stable connections answer heartbeats through the hold; every figure is
    the server's (on workers too: they get the conversation with the target)."""
    workers = WorkerPool(2, lag_interval=0.05) if on_workers else None
    if workers is not None:
        await workers.start()
    try:
        async with server(socketio_like(0.05, 0.2)) as (url, counts):
            config = RUN(tmp_path, url, {})
            prober = make_prober(pool=workers, lag=10.0, lateness=10.0, cpu=1e6)
            report = await execute_run(config.targets[0], config.scenarios[0], prober)
            await counts.until(lambda: len(counts.closes) == counts.opens)
    finally:
        if workers is not None:
            await workers.close()
    r = report.result
    assert r.result == RunResultKind.PASSED, (r.message, r.errors)
    assert r.spike is not None
    assert r.spike.outcomes == {"ok": 20}
    assert r.stable is not None
    assert (r.stable.opened, r.stable.dropped) == (2, 0)
    assert r.stable.message_rtt is not None
    assert r.recovery is not None
    made = 3 + 2 + 20 + r.recovery.probes
    assert counts.opens == made
    assert counts.dropped == 0, "heartbeats kept every held connection"
    assert counts.heartbeats_answered > 0
    assert counts.bad == 0
    # Every connection's conversation sent one event; each stable keepalive one more.
    assert counts.good == made + r.stable.message_rtt.count + r.stable.unanswered
    assert counts.closes == [1000] * made


async def test_a_failing_step_is_named_in_the_runs_errors(tmp_path: Path) -> None:
    """A step that never matches is the error group's step, as the server saw every open."""
    wrong = [
        *SOCKETIO["conversation"][:2],
        {"name": "connected", "expect": {"match": "^41"}, "timeout": "100ms"},
    ]
    async with server(socketio_like(1.0, 1.0)) as (url, counts):
        config = RUN(tmp_path, url, {"stable": None}, conversation=wrong, keepalive=None)
        report = await execute_run(config.targets[0], config.scenarios[0], make_prober())
    r = report.result
    assert r.result == RunResultKind.TARGET_DOWN
    [group] = r.errors
    assert (group.outcome, group.step, group.count) == (
        Outcome.UNEXPECTED_MESSAGE,
        "connected",
        3,
    )
    assert group.example == "no message matched step 'connected' within 0.1s; last one: '40'"
    assert r.as_dict()["errors"][0]["step"] == "connected"
    assert counts.opens == 3
