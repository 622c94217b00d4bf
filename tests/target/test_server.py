"""The reference target as a real aiohttp server on port 0, with aiohttp's client as peer."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import jwt
import psutil
import pytest
import trustme

from spikewatch.target.behaviour import InvalidKnobError, TargetBehaviour
from spikewatch.target.degrade import TargetStats
from spikewatch.target.server import RunningTarget, start_reference_target
from tests.builders import EPOCH, FakeClock
from tests.conftest import scaled
from tests.hostile import INVALID_UTF8, Opcode, encode_frame, read_frame

SECRET = "reference-target-test-secret-0123456789"
OTHER_SECRET = "a-different-secret-of-enough-length-xyz"

StartTarget = Callable[..., Awaitable[RunningTarget]]


@pytest.fixture
async def start() -> AsyncIterator[StartTarget]:
    """Start reference targets on port 0 and close them all after the test."""
    started: list[RunningTarget] = []

    async def start_target(
        behaviour: TargetBehaviour | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: FakeClock | None = None,
    ) -> RunningTarget:
        clocks = {} if clock is None else {"clock": clock, "wall_clock": clock.wall}
        target = await start_reference_target(
            behaviour or TargetBehaviour(), ssl_context=ssl_context, **clocks
        )
        started.append(target)
        return target

    yield start_target
    for target in started:
        await target.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for the test."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=scaled(10))) as session:
        yield session


async def wait_for_stats(
    target: RunningTarget, predicate: Callable[[TargetStats], bool]
) -> TargetStats:
    async with asyncio.timeout(scaled(5)):
        return await target.wait_for_stats(predicate)


def token(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"sub": "spikewatch-1", **claims}, secret, algorithm="HS256")


async def handshake_status(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> aiohttp.WSServerHandshakeError:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await session.ws_connect(url, headers=headers)
    return caught.value


async def test_welcome_then_echo(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """A connection gets the welcome with its number, then text and binary echoes."""
    target = await start()
    async with session.ws_connect(target.url) as ws:
        assert await ws.receive_str() == '{"type":"welcome","conn":1}'
        await ws.send_str('{"type":"ping","seq":1}')
        assert await ws.receive_str() == '{"type":"ping","seq":1}'
        await ws.send_bytes(b"\x00\xff")
        assert await ws.receive_bytes() == b"\x00\xff"
    async with session.ws_connect(target.url) as ws:
        assert json.loads(await ws.receive_str()) == {"type": "welcome", "conn": 2}


async def test_no_welcome(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """With welcome off, the first message is the echo of the client's own."""
    target = await start(TargetBehaviour(welcome=False))
    async with session.ws_connect(target.url) as ws:
        await ws.send_str("first")
        assert await ws.receive_str() == "first"


async def test_url_and_http_url(start: StartTarget) -> None:
    """url is ws:// with the path and http_url the control base, on the bound port."""
    target = await start(TargetBehaviour(path="/ws/test"))
    assert target.port > 0
    assert target.host == "127.0.0.1"
    assert target.url == f"ws://127.0.0.1:{target.port}/ws/test"
    assert target.http_url == f"http://127.0.0.1:{target.port}"


async def test_ipv6_host_is_bracketed_in_urls() -> None:
    """An IPv6 listen address appears in brackets in the URLs."""
    try:
        target = await start_reference_target(TargetBehaviour(), host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with target:
        assert target.url == f"ws://[::1]:{target.port}/ws"


async def test_plain_get_is_refused(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """A GET without an upgrade is answered 400 and not counted as an upgrade request."""
    target = await start()
    async with session.get(target.url.replace("ws://", "http://")) as response:
        assert response.status == 400
        assert "upgrade" in (await response.json())["error"]
    assert target.stats()["requests"] == 0


async def test_handshake_delay_is_observable(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """handshake_delay holds the upgrade answer back by that long."""
    target = await start(TargetBehaviour(handshake_delay=0.2))
    began = time.monotonic()
    async with session.ws_connect(target.url):
        assert time.monotonic() - began >= 0.2


async def test_capacity_refuses_with_503_and_retry_after(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """Beyond capacity open connections the upgrade gets 503 with Retry-After, until one closes."""
    target = await start(TargetBehaviour(capacity=2))
    first = await session.ws_connect(target.url)
    second = await session.ws_connect(target.url)
    refused = await handshake_status(session, target.url)
    assert refused.status == 503
    assert refused.headers is not None
    assert refused.headers["Retry-After"] == "1"
    await first.close()
    await wait_for_stats(target, lambda s: s["open"] == 1)
    third = await session.ws_connect(target.url)
    stats = target.stats()
    assert stats["rejected_capacity"] == 1
    assert stats["upgrades"] == 3
    assert stats["peak_open"] == 2
    await second.close()
    await third.close()


async def test_burst_degrades_until_recovery_delay_after_last_burst_upgrade(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """A burst slows upgrades and keeps the target degraded for recovery_delay after it."""
    recovery = 0.3
    clock = FakeClock()  # the burst rules' clock; the slow delay itself is real time
    target = await start(
        TargetBehaviour(
            burst_threshold=5, burst_window=0.5, recovery_delay=recovery, slow_delay=0.1
        ),
        clock=clock,
    )
    sockets = await asyncio.gather(*(session.ws_connect(target.url) for _ in range(5)))
    stats = target.stats()
    assert stats.bursts == 1
    assert stats.degraded is True
    assert stats.last_burst_epoch is not None
    assert stats.degraded_until_epoch is not None
    assert stats.degraded_until_epoch - stats.last_burst_epoch == pytest.approx(recovery)
    began = time.monotonic()
    async with session.ws_connect(target.url):
        assert time.monotonic() - began >= 0.1
    # That upgrade, within the window of the burst, was part of it and extended it.
    stats = target.stats()
    assert stats.bursts == 1
    assert stats.degraded_until_epoch is not None
    # The recovery delay runs out.
    clock.now = stats.degraded_until_epoch - EPOCH + 0.05
    assert target.stats().degraded is False
    # Once the burst has also left the window, a new upgrade is no part of it.
    assert stats.last_burst_epoch is not None
    clock.now = stats.last_burst_epoch + 0.5 - EPOCH + 0.05
    async with session.ws_connect(target.url):
        pass
    after = target.stats()
    assert after.degraded is False
    assert after.degraded_until_epoch == pytest.approx(stats.degraded_until_epoch)
    for ws in sockets:
        await ws.close()


async def test_drop_on_burst_closes_connections_open_before_it(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """drop_on_burst closes the connections open before the burst with 1012, not its own."""
    target = await start()
    stable = [await session.ws_connect(target.url) for _ in range(2)]
    for ws in stable:
        await ws.receive_str()
    # Arrivals count toward a burst only once a threshold is set, so the stable ones do
    # not; the handshake delay keeps every burst upgrade pending until the burst starts.
    await target.set_behaviour(
        burst_threshold=5, burst_window=5.0, drop_on_burst=True, handshake_delay=scaled(0.2)
    )
    burst = await asyncio.gather(*(session.ws_connect(target.url) for _ in range(5)))
    for ws in stable:
        message = await ws.receive(timeout=scaled(5))
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1012
    stats = await wait_for_stats(target, lambda s: s["open"] == 5)
    assert stats["dropped"] == 2
    for ws in burst:
        assert json.loads(await ws.receive_str())["type"] == "welcome"
        await ws.send_str("still here")
        assert await ws.receive_str() == "still here"
        await ws.close()


async def test_jwt_accepted_from_header_query_and_subprotocol(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """A valid HS256 token is accepted as Bearer header, access_token or subprotocol."""
    target = await start(TargetBehaviour(jwt_key=SECRET, subprotocols=("chat.v1",)))
    good = token()
    async with session.ws_connect(target.url, headers={"Authorization": f"Bearer {good}"}) as ws:
        assert ws.protocol is None
    async with session.ws_connect(f"{target.url}?access_token={good}"):
        pass
    async with session.ws_connect(target.url, protocols=(good, "chat.v1")) as ws:
        assert ws.protocol == "chat.v1"
    async with session.ws_connect(target.url, protocols=(good,)) as ws:
        assert ws.protocol is None
    assert target.stats()["upgrades"] == 4
    assert target.stats()["rejected_auth"] == 0


async def test_jwt_audience_is_enforced(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """With jwt_audience set, only tokens for that audience get through."""
    target = await start(TargetBehaviour(jwt_key=SECRET, jwt_audience="staging"))
    async with session.ws_connect(
        target.url, headers={"Authorization": f"Bearer {token(aud='staging')}"}
    ):
        pass
    refused = await handshake_status(
        session, target.url, headers={"Authorization": f"Bearer {token(aud='prod')}"}
    )
    assert refused.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {token(OTHER_SECRET)}"},
        {"Authorization": "Bearer not-a-jwt"},
    ],
    ids=["missing", "wrong-key", "garbage"],
)
async def test_jwt_missing_or_invalid_gets_401(
    start: StartTarget, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """A missing or invalid token is refused with 401 before the upgrade."""
    target = await start(TargetBehaviour(jwt_key=SECRET))
    refused = await handshake_status(session, target.url, headers=headers)
    assert refused.status == 401
    assert refused.headers is not None
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    stats = target.stats()
    assert stats["rejected_auth"] == 1
    assert stats["upgrades"] == 0


async def test_subprotocol_selection_without_auth(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """The first offered subprotocol the target accepts is selected, in the client's order."""
    target = await start(TargetBehaviour(subprotocols=("chat.v1", "chat.v2")))
    async with session.ws_connect(target.url, protocols=("other", "chat.v2", "chat.v1")) as ws:
        assert ws.protocol == "chat.v2"


async def test_healthz_and_stats(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """/healthz answers 200 and /stats the same counters as stats()."""
    target = await start()
    async with session.get(f"{target.http_url}/healthz") as response:
        assert response.status == 200
    async with session.ws_connect(target.url):
        async with session.get(f"{target.http_url}/stats") as response:
            stats = await response.json()
        assert stats == target.stats()
        assert stats["open"] == 1
        assert stats["upgrades"] == 1
        assert stats["degraded"] is False
        assert stats["degraded_until_epoch"] is None
        assert stats["last_burst_epoch"] is None


async def test_degrade_changes_knobs_live_and_reset_restores(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """POST /degrade replaces knobs at once; POST /reset brings back the start-up ones."""
    target = await start(TargetBehaviour(capacity=10))
    async with session.post(
        f"{target.http_url}/degrade",
        json={"handshake_delay": 0.2, "recovery_delay": 30, "burst_threshold": 20},
    ) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["behaviour"]["handshake_delay"] == 0.2
    assert answer["behaviour"]["capacity"] == 10
    assert target.behaviour.burst_threshold == 20
    began = time.monotonic()
    async with session.ws_connect(target.url):
        assert time.monotonic() - began >= 0.2
    async with session.post(f"{target.http_url}/reset") as response:
        assert response.status == 200
        assert (await response.json())["behaviour"]["handshake_delay"] == 0
    assert target.behaviour == TargetBehaviour(capacity=10)


async def test_reset_ends_a_degradation(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """After a burst, /reset makes the target healthy at once."""
    target = await start(
        TargetBehaviour(burst_threshold=2, burst_window=5.0, recovery_delay=60, slow_delay=0)
    )
    for _ in range(2):
        async with session.ws_connect(target.url):
            pass
    assert target.stats()["degraded"] is True
    async with session.post(f"{target.http_url}/reset") as response:
        assert response.status == 200
    assert target.stats()["degraded"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"colour": "red"}', "unknown knob"),
        (b'{"capacity": "ten"}', "integer or null"),
        (b'{"handshake_delay": "soon"}', "expected a duration"),
        (b"[1, 2]", "JSON object"),
        (b"{not json", "not JSON"),
    ],
)
async def test_degrade_refuses_bad_bodies(
    start: StartTarget, session: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    """A bad /degrade body is a 400 JSON error and changes nothing."""
    target = await start()
    async with session.post(
        f"{target.http_url}/degrade", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert target.behaviour == TargetBehaviour()


async def test_set_behaviour_in_process(start: StartTarget) -> None:
    """set_behaviour changes knobs in process and refuses unknown ones; reset() restores."""
    target = await start()
    changed = await target.set_behaviour(capacity=0, welcome=False)
    assert changed.capacity == 0
    assert target.behaviour.welcome is False
    with pytest.raises(InvalidKnobError, match="unknown knob"):
        await target.set_behaviour(colour="red")
    assert await target.reset() == TargetBehaviour()


async def test_tls_serves_wss(start: StartTarget, session: aiohttp.ClientSession) -> None:
    """With an SSL context the target serves wss:// that a client trusting the CA accepts."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    target = await start(ssl_context=server_context)
    assert target.url.startswith("wss://")
    assert target.http_url.startswith("https://")
    async with session.ws_connect(target.url, ssl=client_context) as ws:
        assert (await ws.receive_json())["type"] == "welcome"
        await ws.send_str("secure")
        assert await ws.receive_str() == "secure"


def sockets_on(port: int) -> list[object]:
    return [c for c in psutil.Process().net_connections(kind="tcp") if c.laddr.port == port]


async def test_close_closes_websockets_and_listener(session: aiohttp.ClientSession) -> None:
    """close() sends 1001 to every client and leaves no socket on the target's port."""
    target = await start_reference_target(TargetBehaviour())
    clients = [await session.ws_connect(target.url) for _ in range(3)]
    for ws in clients:
        await ws.receive_str()
    await asyncio.wait_for(target.close(), scaled(3))
    for ws in clients:
        message = await ws.receive(timeout=scaled(5))
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001
    assert sockets_on(target.port) == []
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.ws_connect(target.url)
    await target.close()


async def test_close_is_prompt_with_a_delayed_upgrade_pending(
    session: aiohttp.ClientSession,
) -> None:
    """An upgrade waiting out a long handshake_delay does not hold close() up."""
    async with await start_reference_target(TargetBehaviour(handshake_delay=30)) as target:
        pending = asyncio.create_task(session.ws_connect(target.url))
        await wait_for_stats(target, lambda s: s["requests"] == 1)
        began = time.monotonic()
        await target.close()
        assert time.monotonic() - began < scaled(2)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await pending
    assert caught.value.status == 503


async def test_client_gone_during_handshake_delay_frees_its_slot(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """A client that gives up while the upgrade is delayed does not keep a capacity slot."""
    target = await start(TargetBehaviour(capacity=1, handshake_delay=0.2))
    impatient = asyncio.create_task(session.ws_connect(target.url))
    await wait_for_stats(target, lambda s: s["requests"] == 1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    async with session.ws_connect(target.url) as ws:
        await ws.receive_str()
    assert target.stats()["rejected_capacity"] == 0


async def test_wait_for_stats_times_out(start: StartTarget) -> None:
    """wait_for_stats raises TimeoutError when the condition never comes."""
    target = await start()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await target.wait_for_stats(lambda s: s["open"] == 1)


async def test_token_offered_as_subprotocol_never_reaches_the_logs(
    start: StartTarget, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A JWT offered as the only subprotocol is accepted and not logged by anyone."""
    caplog.set_level("DEBUG")
    target = await start(TargetBehaviour(jwt_key=SECRET))
    good = token()
    async with session.ws_connect(target.url, protocols=(good,)) as ws:
        assert ws.protocol is None
    assert good not in caplog.text


async def test_malformed_upgrade_gets_400_and_frees_its_slot(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """An upgrade without Sec-WebSocket-Key is answered 400 and keeps no capacity slot."""
    target = await start(TargetBehaviour(capacity=1))
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    async with session.get(target.url.replace("ws://", "http://"), headers=headers) as response:
        assert response.status == 400
    async with session.ws_connect(target.url) as ws:
        await ws.receive_str()


async def test_upgrade_completing_while_closing_is_closed_at_once(
    start: StartTarget, session: aiohttp.ClientSession
) -> None:
    """An upgrade that completes after close() began is closed with 1001 straight away."""
    target = await start()
    # Reach in to open the race window that close() otherwise leaves too briefly to hit.
    target._target.closing.set()
    async with session.ws_connect(target.url) as ws:
        message = await ws.receive(timeout=scaled(5))
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001


async def test_busy_port_fails_to_start(start: StartTarget) -> None:
    """Starting on a port in use raises OSError and leaves nothing behind."""
    first = await start()
    with pytest.raises(OSError, match="in use"):
        await start_reference_target(TargetBehaviour(), port=first.port)


async def test_invalid_utf8_from_a_client_closes_with_1007(start: StartTarget) -> None:
    """A text message that is not UTF-8 is not echoed; the target closes with 1007."""
    target = await start(TargetBehaviour(welcome=False))
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        async with asyncio.timeout(scaled(5)):
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: {target.host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            writer.write(encode_frame(Opcode.TEXT, INVALID_UTF8, mask=b"\x00\x01\x02\x03"))
            frame = await read_frame(reader)
            assert frame.opcode == Opcode.CLOSE
            assert frame.payload[:2] == (1007).to_bytes(2, "big")
            writer.write(encode_frame(Opcode.CLOSE, frame.payload[:2], mask=b"\x00\x01\x02\x03"))
            assert await reader.read() == b""
        await wait_for_stats(target, lambda s: s["open"] == 0)
    finally:
        writer.close()
