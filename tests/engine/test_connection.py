"""Every outcome of the contract, against real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl

import jwt
import pytest
import trustme

from spikewatch.auth.jwt import TokenMinter
from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import classify_connect_error
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine.connection import ClientConnection, Keepalive, open_connection
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.spec import resolve
from spikewatch.protocol.frames import Opcode
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import RunningTarget, start_reference_target
from tests import hostile
from tests.conftest import TIMER_GRAIN, scaled
from tests.engine.support import make_spec

#: Every test here runs on asyncio's loop and on uvloop (tests/conftest.py).
RUN_ON_EVERY_EVENT_LOOP = True


WELCOME = r'"type":\s*"welcome"'
ECHO = ('{"type":"ping","seq":{seq}}', '"seq":{seq}')


@pytest.fixture
def registry() -> ConnectionRegistry:
    return ConnectionRegistry(1000)


async def attempt_once(url: str, registry: ConnectionRegistry, **spec_args: object) -> Attempt:
    attempt = Attempt(Phase.BASELINE, 7)
    conn = await open_connection(make_spec(url, **spec_args), attempt, registry)  # type: ignore[arg-type]
    if conn is not None:
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert registry.open == 0, "every connection is closed and its slot released"
    return attempt


async def test_full_cycle_against_reference_target(
    reference: RunningTarget, registry: ConnectionRegistry
) -> None:
    """Upgrade, welcome and echo succeed, and every step is timed in order."""
    a = await attempt_once(reference.url, registry, welcome=WELCOME, echo=ECHO)
    assert a.outcome == Outcome.OK, a.detail
    assert a.handshake is not None
    assert a.first_message is not None
    assert a.rtt is not None
    assert a.latency is not None
    assert 0 < a.handshake <= a.latency
    assert a.latency == pytest.approx(a.handshake + a.first_message + a.rtt, abs=1e-3)
    await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open == 0), scaled(5))


async def test_added_handshake_latency_is_measured(registry: ConnectionRegistry) -> None:
    """A target that delays its upgrade by 150 ms shows it in the handshake time."""
    async with await start_reference_target(TargetBehaviour(handshake_delay=0.15)) as target:
        a = await attempt_once(target.url, registry)
    assert a.outcome == Outcome.OK
    assert a.handshake is not None
    assert 0.15 - TIMER_GRAIN <= a.handshake < 0.15 + scaled(0.5)


async def test_refused(registry: ConnectionRegistry) -> None:
    """Nothing listening is 'refused'."""
    a = await attempt_once(f"ws://127.0.0.1:{hostile.unused_port()}/ws", registry)
    assert a.outcome == Outcome.REFUSED
    assert a.step == "connect"


async def test_accepts_and_never_answers(registry: ConnectionRegistry) -> None:
    """A server that accepts and stays silent is a 'timeout' at handshake_timeout."""
    async with hostile.silent_server() as server:
        a = await attempt_once(server.url, registry, handshake_timeout=0.3)
    assert a.outcome == Outcome.TIMEOUT
    assert "no upgrade answer within 0.3s" in a.detail
    assert a.step == "upgrade", "a timeout says which step it timed out on"
    assert a.started is not None
    assert a.ended is not None
    assert 0.3 - TIMER_GRAIN <= a.ended - a.started < 0.3 + scaled(0.5)


@pytest.mark.parametrize("status", [401, 503])
async def test_http_status(registry: ConnectionRegistry, status: int) -> None:
    """A non-101 answer is 'http_status' with its code kept."""
    async with hostile.status_server(status) as server:
        a = await attempt_once(server.url, registry)
    assert a.outcome == Outcome.HTTP_STATUS
    assert a.status == status
    assert str(status) in a.detail


async def test_garbage_instead_of_http(registry: ConnectionRegistry) -> None:
    """Non-HTTP bytes are a 'protocol_error' at once, not a timeout."""
    async with hostile.garbage_server() as server:
        a = await attempt_once(server.url, registry, handshake_timeout=5)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert "not HTTP" in a.detail
    assert a.started is not None
    assert a.ended is not None
    assert a.ended - a.started < 1


async def test_bad_accept(registry: ConnectionRegistry) -> None:
    """A wrong Sec-WebSocket-Accept is a 'protocol_error'."""
    async with hostile.bad_accept_server() as server:
        a = await attempt_once(server.url, registry)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert "Sec-WebSocket-Accept" in a.detail


@pytest.mark.parametrize("mode", ["frame", "eof", "reset"])
async def test_close_right_after_upgrade(registry: ConnectionRegistry, mode: str) -> None:
    """A peer that closes (frame, FIN or RST) before the welcome is 'closed'."""
    async with hostile.close_after_upgrade_server(mode) as server:  # type: ignore[arg-type]
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.CLOSED, a.detail
    assert "welcome" in a.detail


async def test_close_followed_by_junk_is_closed_and_answered_with_its_code(
    registry: ConnectionRegistry,
) -> None:
    """A Close with junk after it in one write is 'closed', answered with the peer's code."""
    answers: list[hostile.Frame] = []

    async def handle(connection: hostile.HostileConnection) -> None:
        await connection.accept_upgrade()
        close = hostile.encode_frame(Opcode.CLOSE, hostile.close_payload(4000, "bye"))
        await connection.send(close + b"\xff\xfe not a frame")
        answers.append(await hostile.read_frame(connection.reader))

    async with hostile.HostileServer(handle) as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.CLOSED, a.detail
    assert a.detail == "the peer closed with code 4000 (bye) during the welcome"
    assert [(f.opcode, f.payload) for f in answers] == [(Opcode.CLOSE, (4000).to_bytes(2, "big"))]


async def test_wrong_welcome(registry: ConnectionRegistry) -> None:
    """A welcome that does not match is 'unexpected_message', with the message quoted."""
    async with hostile.welcome_server('{"type":"error"}') as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.UNEXPECTED_MESSAGE
    assert '{"type":"error"}' in a.detail


async def test_late_welcome(registry: ConnectionRegistry) -> None:
    """A welcome later than its timeout is a 'timeout' naming the welcome."""
    async with hostile.welcome_server('{"type":"welcome"}', delay=1.0) as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME, welcome_timeout=0.2)
    assert a.outcome == Outcome.TIMEOUT
    assert "no welcome within 0.2s" in a.detail
    assert a.step == "welcome"


async def test_welcome_then_echo_from_raw_server(registry: ConnectionRegistry) -> None:
    """Against a hand-written server the welcome delay is measured as first_message."""
    async with hostile.welcome_server('{"type":"welcome"}', delay=0.1) as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME, echo=ECHO)
    assert a.outcome == Outcome.OK, a.detail
    assert a.first_message is not None
    assert a.first_message >= 0.1 - TIMER_GRAIN


async def test_oversized_frame(registry: ConnectionRegistry) -> None:
    """A frame declaring 2^40 bytes is a 'protocol_error' from its header alone."""
    async with hostile.oversized_frame_server(2**40) as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert "max_message_bytes" in a.detail


async def test_invalid_utf8(registry: ConnectionRegistry) -> None:
    """A text frame with invalid UTF-8 is a 'protocol_error'."""
    async with hostile.invalid_utf8_server() as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert "UTF-8" in a.detail


async def test_masked_server_frame(registry: ConnectionRegistry) -> None:
    """A masked frame from the server is a 'protocol_error' (RFC 6455 §5.1)."""
    async with hostile.masked_frame_server() as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME)
    assert a.outcome == Outcome.PROTOCOL_ERROR
    assert "masked" in a.detail


async def test_dribbled_upgrade_answer_still_succeeds(registry: ConnectionRegistry) -> None:
    """An answer sent a byte at a time is assembled and accepted."""
    async with hostile.dribble_server(0.001) as server:
        a = await attempt_once(server.url, registry, handshake_timeout=scaled(5))
    assert a.outcome == Outcome.OK, a.detail


async def test_unmatched_echo_is_unexpected_message(registry: ConnectionRegistry) -> None:
    """Echo answers that never match are 'unexpected_message' with the last one quoted."""
    async with hostile.welcome_server('{"type":"welcome"}') as server:
        a = await attempt_once(
            server.url, registry, welcome=WELCOME, echo=("hello", "never"), echo_timeout=0.2
        )
    assert a.outcome == Outcome.UNEXPECTED_MESSAGE
    assert "'hello'" in a.detail


async def test_no_echo_answer_is_timeout(registry: ConnectionRegistry) -> None:
    """A server that never echoes is a 'timeout' naming the echo."""
    async with hostile.welcome_server('{"type":"welcome"}', then_echo=False) as server:
        a = await attempt_once(server.url, registry, welcome=WELCOME, echo=ECHO, echo_timeout=0.2)
    assert a.outcome == Outcome.TIMEOUT
    assert "no echo answer within 0.2s" in a.detail
    assert a.step == "echo"


async def test_dns_failure_is_classified(registry: ConnectionRegistry) -> None:
    """A name that does not resolve is 'dns_error' (resolved as the runner does)."""
    with pytest.raises(socket.gaierror) as info:
        await resolve("no-such-host.invalid", 80)
    outcome, detail = classify_connect_error(info.value, tls=False)
    assert outcome == Outcome.DNS_ERROR
    assert "name resolution failed" in detail


async def test_no_free_slot_is_aborted(reference: RunningTarget) -> None:
    """With the connection limit reached, the attempt is not made: 'aborted'."""
    registry = ConnectionRegistry(0)
    a = Attempt(Phase.SPIKE, 1)
    assert await open_connection(make_spec(reference.url), a, registry) is None
    assert a.outcome == Outcome.ABORTED
    assert "max_connections=0" in a.detail


async def test_cancellation_closes_the_connection(registry: ConnectionRegistry) -> None:
    """Cancelling an attempt mid-handshake closes its socket and frees its slot."""
    async with hostile.silent_server() as server:
        attempt = Attempt(Phase.SPIKE, 1)
        task = asyncio.create_task(open_connection(make_spec(server.url), attempt, registry))
        await asyncio.wait_for(server.wait_for(lambda s: s.open > 0), scaled(5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(server.wait_for(lambda s: s.open == 0), scaled(5))
    assert registry.open == 0


async def test_held_connection_closes_on_request(
    reference: RunningTarget, registry: ConnectionRegistry
) -> None:
    """A kept-open connection stays open until closed, with a closing handshake."""
    attempt = Attempt(Phase.SPIKE, 1)
    conn = await open_connection(make_spec(reference.url), attempt, registry, keep_open=True)
    assert conn is not None
    assert conn.is_open
    await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open == 1), scaled(5))
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), scaled(5))
    await asyncio.wait_for(reference.wait_for_stats(lambda s: s.open == 0), scaled(5))
    assert registry.open == 0
    assert conn.lost_at is None


@pytest.mark.parametrize("mode", ["ping", "echo"])
async def test_keepalive_measures_rtt_and_detects_a_drop(
    registry: ConnectionRegistry, mode: str
) -> None:
    """A stable connection answers pings (or echoes) and a dropped one is counted lost."""
    rtts: list[float] = []
    three = asyncio.Event()

    def on_rtt(rtt: float) -> None:
        rtts.append(rtt)
        if len(rtts) >= 3:
            three.set()

    keepalive = Keepalive(0.05, 1.0, mode, on_rtt)  # type: ignore[arg-type]
    async with hostile.echo_server() as server:
        spec = make_spec(server.url, echo=ECHO)
        conn = await open_connection(spec, Attempt(Phase.STABLE, 1), registry, keepalive=keepalive)
        assert isinstance(conn, ClientConnection)
        assert conn.is_open
        await asyncio.wait_for(three.wait(), scaled(5))
        assert conn.lost_at is None
        server.drop_all()
        await asyncio.wait_for(conn.wait_closed(), scaled(5))
    assert conn.lost_at is not None
    assert all(0 <= r < 1 for r in rtts)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_target(ca: trustme.CA) -> RunningTarget:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    return await start_reference_target(TargetBehaviour(), ssl_context=server_context)


async def test_tls_with_test_ca(ca: trustme.CA, registry: ConnectionRegistry) -> None:
    """wss with the test CA trusted succeeds."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with await tls_target(ca) as target:
        a = await attempt_once(
            target.url, registry, welcome=WELCOME, ssl_context=client, server_hostname="localhost"
        )
    assert a.outcome == Outcome.OK, a.detail


async def test_tls_without_the_ca_is_tls_error(
    ca: trustme.CA, registry: ConnectionRegistry
) -> None:
    """wss with an untrusted certificate is 'tls_error' naming the verification failure."""
    async with await tls_target(ca) as target:
        a = await attempt_once(
            target.url,
            registry,
            ssl_context=ssl.create_default_context(),
            server_hostname="localhost",
        )
    assert a.outcome == Outcome.TLS_ERROR
    assert "certificate verification failed" in a.detail


async def test_tls_against_plain_server_is_tls_error(
    reference: RunningTarget, registry: ConnectionRegistry
) -> None:
    """Speaking TLS to a plain-TCP server is 'tls_error'."""
    a = await attempt_once(
        reference.url,
        registry,
        ssl_context=ssl.create_default_context(),
        server_hostname="localhost",
    )
    assert a.outcome == Outcome.TLS_ERROR


SECRET = "s3cret-for-tests-only-0123456789abcdef"


@pytest.mark.parametrize(
    ("send_as", "param"), [("header", None), ("query", "access_token"), ("subprotocol", None)]
)
async def test_jwt_minted_per_connection_is_accepted(
    registry: ConnectionRegistry, send_as: str, param: str | None
) -> None:
    """A JWT-checking target accepts the minted tokens however they are sent."""
    behaviour = TargetBehaviour(jwt_key=SECRET, jwt_audience="staging")
    minter = TokenMinter(
        algorithm="HS256",
        key_material=SECRET,
        claims={"sub": "sw-{conn}", "aud": "staging"},
        ttl=60,
    )
    async with await start_reference_target(behaviour) as target:
        a = await attempt_once(
            target.url,
            registry,
            welcome=WELCOME,
            minter=minter,
            send_as=send_as,
            query_param=param,
        )
        assert a.outcome == Outcome.OK, a.detail
        assert target.stats().rejected_auth == 0


async def test_jwt_with_wrong_key_is_rejected(registry: ConnectionRegistry) -> None:
    """Tokens signed with the wrong key get the target's 401."""
    behaviour = TargetBehaviour(jwt_key=SECRET)
    minter = TokenMinter(algorithm="HS256", key_material="wrong-key-" * 4, claims={}, ttl=60)
    async with await start_reference_target(behaviour) as target:
        a = await attempt_once(target.url, registry, minter=minter)
    assert a.outcome == Outcome.HTTP_STATUS
    assert a.status == 401


def test_minted_token_carries_connection_number() -> None:
    """The {conn} placeholder becomes the attempt's connection number."""
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims={"sub": "c{conn}"}, ttl=5)
    claims = jwt.decode(minter.mint(42), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "c42"


@pytest.mark.parametrize("iterations", [0, 1, 2, 3, 5, 8, 13])
async def test_connects_cut_short_leave_no_slot_or_connection_behind(
    reference: RunningTarget, iterations: int
) -> None:
    """Attempts cancelled at any point of their connect give every slot back at once."""
    registry = ConnectionRegistry(100)
    spec = make_spec(reference.url, welcome=WELCOME, echo=ECHO)
    attempts = [Attempt(Phase.SPIKE, i) for i in range(20)]
    tasks = [asyncio.create_task(open_connection(spec, a, registry)) for a in attempts]
    for _ in range(iterations):
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, ClientConnection):  # finished before the cancel: closing
            await asyncio.wait_for(result.wait_closed(), scaled(5))
    assert registry.open == 0, "every cancelled attempt gave its slot back"
    assert registry.abort_all() == 0, "no connection is left tracked"
    assert all(a.outcome is not None for a in attempts if a.started is not None)
