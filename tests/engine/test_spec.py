"""Tests for spikewatch.engine.spec."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme

from spikewatch.config import SpikewatchConfig, TargetConfig, parse_config
from spikewatch.engine.spec import build_connection_spec, build_ssl_context, resolve
from tests.conftest import scaled

SECRET = "spec-test-secret-of-at-least-32-bytes-0123"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def config_of(target: dict[str, Any], *, base_dir: Path | None = None) -> SpikewatchConfig:
    """Return a validated config holding ``target`` and one scenario."""
    data = {
        "targets": [{"name": "t", **target}],
        "scenarios": [{"name": "s", "spike": {"connections": 1}}],
    }
    return parse_config(data, source="tests/engine/test_spec.py", base_dir=base_dir)


def target_of(target: dict[str, Any], *, base_dir: Path | None = None) -> TargetConfig:
    """Return the validated config of one target."""
    return config_of(target, base_dir=base_dir).targets[0]


def parse_request(data: bytes) -> tuple[str, dict[str, str]]:
    """Split an upgrade request into its request line and headers (lower-case names)."""
    assert data.endswith(b"\r\n\r\n")
    line, *lines = data[:-4].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for text in lines:
        name, _, value = text.partition(": ")
        assert name.lower() not in headers
        headers[name.lower()] = value
    return line, headers


def jwt_target(send_as: str, **extra: Any) -> TargetConfig:
    """Return a target that mints an HS256 token per connection, sent as ``send_as``."""
    return target_of(
        {
            "url": "ws://127.0.0.1:8765/ws",
            "auth": {
                "jwt": {
                    "secret": SECRET,
                    "algorithm": "HS256",
                    "claims": {"sub": "spikewatch-{conn}", "aud": "staging"},
                    "ttl": "5m",
                    "send_as": send_as,
                }
            },
            **extra,
        }
    )


def decode(token: str) -> dict[str, Any]:
    """Verify a minted token with the shared secret and return its claims."""
    claims: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"], audience="staging")
    return claims


# --- what every connection shares ---------------------------------------------------------


def test_plain_target_addresses_and_request() -> None:
    """A ws:// target connects to the given address and port, with its path, query and Host."""
    target = target_of(
        {
            "url": "ws://chat.example.com:8080/ws/test?room=1",
            "headers": {"X-Client": "spikewatch"},
            "subprotocols": ["chat.v1", "chat.v2"],
            "handshake_timeout": "3s",
            "close_timeout": "250ms",
            "max_message_bytes": 4096,
        }
    )
    spec = build_connection_spec(target, "192.0.2.7")
    assert (spec.address, spec.port) == ("192.0.2.7", 8080)
    assert spec.ssl is None
    assert spec.server_hostname is None
    assert (spec.handshake_timeout, spec.close_timeout) == (3.0, 0.25)
    assert spec.max_message_bytes == 4096
    assert spec.minter is None
    request, subprotocols = spec.render_request(KEY, 0)
    line, headers = parse_request(request)
    assert line == "GET /ws/test?room=1 HTTP/1.1"
    assert headers["host"] == "chat.example.com:8080"
    assert headers["x-client"] == "spikewatch"
    assert headers["sec-websocket-protocol"] == "chat.v1, chat.v2"
    assert headers["sec-websocket-key"] == KEY.decode()
    assert headers["upgrade"] == "websocket"
    assert "authorization" not in headers
    assert subprotocols == ("chat.v1", "chat.v2")


def test_default_port_is_left_out_of_the_host_header() -> None:
    """ws:// without a port connects to 80, path / and Host without a port."""
    spec = build_connection_spec(target_of({"url": "ws://chat.example.com"}), "192.0.2.7")
    assert spec.port == 80
    line, headers = parse_request(spec.render_request(KEY, 0)[0])
    assert line == "GET / HTTP/1.1"
    assert headers["host"] == "chat.example.com"
    assert "sec-websocket-protocol" not in headers


def test_without_expectations() -> None:
    """A target without welcome or echo expects neither."""
    spec = build_connection_spec(target_of({"url": "ws://127.0.0.1:1/"}), "127.0.0.1")
    assert spec.welcome is None
    assert spec.welcome_timeout == 0.0
    assert (spec.echo_payload, spec.echo_match, spec.echo_pattern) == (None, None, None)
    assert spec.echo_timeout == 0.0


def test_welcome_pattern_is_compiled() -> None:
    """The welcome match is a compiled regex with its timeout."""
    target = target_of(
        {"url": "ws://127.0.0.1:1/", "welcome": {"match": r'"type":\s*"welcome"', "timeout": "2s"}}
    )
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.welcome is not None
    assert spec.welcome.search('{"type": "welcome"}')
    assert not spec.welcome.search('{"type": "bye"}')
    assert spec.welcome_timeout == 2.0


def test_echo_without_placeholders_is_precompiled() -> None:
    """An echo match without placeholders is compiled once and shared by every message."""
    target = target_of(
        {
            "url": "ws://127.0.0.1:1/",
            "echo": {"payload": '{"type":"ping","seq":{seq},"conn":{conn}}', "match": "pong"},
        }
    )
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.echo_pattern is not None
    assert spec.echo_timeout == 2.0
    payload, pattern = spec.echo_for(3, 41)
    assert payload == '{"type":"ping","seq":41,"conn":3}'
    assert pattern is spec.echo_pattern
    assert spec.echo_for(4, 1)[1] is spec.echo_pattern


def test_echo_match_with_placeholders_is_filled_per_message() -> None:
    """``{seq}`` and ``{conn}`` in the match become that message's numbers."""
    target = target_of(
        {
            "url": "ws://127.0.0.1:1/",
            "echo": {"payload": "ping {seq}", "match": "^pong {seq} from {conn}$", "timeout": 1},
        }
    )
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.echo_pattern is None
    assert spec.echo_match == "^pong {seq} from {conn}$"
    payload, pattern = spec.echo_for(12, 7)
    assert payload == "ping 7"
    assert pattern.search("pong 7 from 12")
    assert not pattern.search("pong 8 from 12")
    assert not pattern.search("pong 7 from 13")
    assert spec.echo_timeout == 1.0


def test_echo_match_with_only_conn_placeholder() -> None:
    """A match with only ``{conn}`` is filled per connection too."""
    target = target_of(
        {"url": "ws://127.0.0.1:1/", "echo": {"payload": "hi", "match": "conn={conn}\\b"}}
    )
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.echo_pattern is None
    payload, pattern = spec.echo_for(5, 0)
    assert payload == "hi"
    assert pattern.search("conn=5 ok")
    assert not pattern.search("conn=50 ok")


# --- JWT ----------------------------------------------------------------------------------


def test_jwt_in_the_authorization_header() -> None:
    """send_as header puts a fresh Bearer token for the connection in Authorization."""
    spec = build_connection_spec(jwt_target("header", subprotocols=["chat.v1"]), "127.0.0.1")
    assert spec.minter is not None
    assert spec.send_as == "header"
    request, subprotocols = spec.render_request(KEY, 17)
    _, headers = parse_request(request)
    scheme, _, token = headers["authorization"].partition(" ")
    assert scheme == "Bearer"
    claims = decode(token)
    assert claims["sub"] == "spikewatch-17"
    assert claims["exp"] - claims["iat"] == 300
    assert subprotocols == ("chat.v1",)
    assert headers["sec-websocket-protocol"] == "chat.v1"


def test_each_connection_gets_its_own_token() -> None:
    """Tokens of different connections carry their own connection number."""
    spec = build_connection_spec(jwt_target("header"), "127.0.0.1")
    subs = []
    for conn in (1, 2):
        _, headers = parse_request(spec.render_request(KEY, conn)[0])
        subs.append(decode(headers["authorization"].removeprefix("Bearer "))["sub"])
    assert subs == ["spikewatch-1", "spikewatch-2"]


def test_jwt_in_a_query_parameter() -> None:
    """send_as query:<param> appends the token to the request target's query."""
    target = jwt_target("query:access_token", url="ws://127.0.0.1:8765/ws?room=1")
    spec = build_connection_spec(target, "127.0.0.1")
    assert (spec.send_as, spec.query_param) == ("query", "access_token")
    request, _ = spec.render_request(KEY, 4)
    line, headers = parse_request(request)
    match = re.fullmatch(r"GET /ws\?room=1&access_token=([A-Za-z0-9_.-]+) HTTP/1\.1", line)
    assert match is not None
    assert decode(match.group(1))["sub"] == "spikewatch-4"
    assert "authorization" not in headers


def test_jwt_as_a_subprotocol() -> None:
    """send_as subprotocol offers the token after the target's own subprotocols."""
    spec = build_connection_spec(jwt_target("subprotocol", subprotocols=["chat.v1"]), "127.0.0.1")
    request, subprotocols = spec.render_request(KEY, 9)
    _, headers = parse_request(request)
    assert len(subprotocols) == 2
    assert subprotocols[0] == "chat.v1"
    assert decode(subprotocols[1])["sub"] == "spikewatch-9"
    assert headers["sec-websocket-protocol"] == f"chat.v1, {subprotocols[1]}"
    assert "authorization" not in headers


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


def test_default_tls_context_verifies() -> None:
    """Without tls settings the context verifies the certificate and the host name."""
    context = build_ssl_context(target_of({"url": "wss://example.com/"}).tls)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ca_file_is_the_trust_anchor(ca: trustme.CA, tmp_path: Path) -> None:
    """tls.ca_file is loaded as the one CA the context trusts."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    target = target_of(
        {"url": "wss://example.com/", "tls": {"ca_file": "ca.pem"}}, base_dir=tmp_path
    )
    context = build_ssl_context(target.tls)
    assert context.get_ca_certs(binary_form=True) == [
        ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
    ]
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_insecure_skip_verify_turns_verification_off() -> None:
    """insecure_skip_verify neither checks the host name nor the certificate."""
    target = target_of({"url": "wss://example.com/", "tls": {"insecure_skip_verify": True}})
    context = build_ssl_context(target.tls)
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_NONE


def test_client_cert_in_one_file_loads(ca: trustme.CA, tmp_path: Path) -> None:
    """cert_file alone may hold both the certificate chain and its key."""
    client = ca.issue_cert("spikewatch-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    target = target_of(
        {"url": "wss://example.com/", "tls": {"cert_file": "client.pem"}}, base_dir=tmp_path
    )
    assert isinstance(build_ssl_context(target.tls), ssl.SSLContext)


def test_unloadable_client_cert_fails(ca: trustme.CA, tmp_path: Path) -> None:
    """A cert_file without its key fails to build the context."""
    ca.issue_cert("spikewatch-client").cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    target = target_of(
        {"url": "wss://example.com/", "tls": {"cert_file": "c.pem"}}, base_dir=tmp_path
    )
    with pytest.raises(ssl.SSLError):
        build_ssl_context(target.tls)


@pytest.fixture
async def tls_server(ca: trustme.CA) -> AsyncIterator[tuple[int, asyncio.Queue[Any]]]:
    """A TLS server on 127.0.0.1 port 0 that requires a client certificate from ``ca``.

    It offers h2 and http/1.1 by ALPN, and queues (peer certificate as DER, ALPN protocol)
    per connection.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2", "http/1.1"])
    seen: asyncio.Queue[Any] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert(binary_form=True)
        await seen.put((peer, ssl_object.selected_alpn_protocol()))
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, seen


async def test_tls_context_presents_client_cert_and_asks_for_http1(
    ca: trustme.CA, tmp_path: Path, tls_server: tuple[int, asyncio.Queue[Any]]
) -> None:
    """A wss:// spec trusts ca_file, presents cert_file/key_file and offers ALPN http/1.1."""
    port, seen = tls_server
    client = ca.issue_cert("spikewatch-client")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    target = target_of(
        {
            "url": f"wss://localhost:{port}/ws",
            "tls": {"ca_file": "ca.pem", "cert_file": "client.pem", "key_file": "client.key"},
        },
        base_dir=tmp_path,
    )
    spec = build_connection_spec(target, "127.0.0.1")
    assert spec.ssl is not None
    assert spec.server_hostname == "localhost"
    async with asyncio.timeout(scaled(5)):
        reader, writer = await asyncio.open_connection(
            spec.address, spec.port, ssl=spec.ssl, server_hostname=spec.server_hostname
        )
        try:
            assert await reader.read() == b"ok"
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        finally:
            writer.close()
            await writer.wait_closed()
        peercert, alpn = await seen.get()
    assert alpn == "http/1.1"
    assert peercert == ssl.PEM_cert_to_DER_cert(client.cert_chain_pems[0].bytes().decode())


def test_wss_spec_uses_server_name_for_sni() -> None:
    """tls.server_name replaces the URL's host as SNI and the name checked."""
    target = target_of({"url": "wss://10.0.0.5:8443/ws", "tls": {"server_name": "chat.internal"}})
    spec = build_connection_spec(target, "10.0.0.5")
    assert isinstance(spec.ssl, ssl.SSLContext)
    assert spec.server_hostname == "chat.internal"
    assert spec.port == 8443
    assert parse_request(spec.render_request(KEY, 0)[0])[1]["host"] == "10.0.0.5:8443"


def test_wss_default_port_is_443() -> None:
    """wss:// without a port connects to 443 and leaves it out of Host."""
    spec = build_connection_spec(target_of({"url": "wss://chat.example.com/ws"}), "192.0.2.1")
    assert spec.port == 443
    assert spec.server_hostname == "chat.example.com"
    assert parse_request(spec.render_request(KEY, 0)[0])[1]["host"] == "chat.example.com"


def test_given_ssl_context_is_used_as_is() -> None:
    """A context handed in is used instead of building one from the config."""
    context = ssl.create_default_context()
    spec = build_connection_spec(
        target_of({"url": "wss://chat.example.com/ws"}), "192.0.2.1", ssl_context=context
    )
    assert spec.ssl is context
    assert spec.server_hostname == "chat.example.com"


# --- resolve -------------------------------------------------------------------------------


async def test_resolve_an_address_returns_it() -> None:
    """An IP address resolves to itself."""
    assert await resolve("127.0.0.1", 80) == "127.0.0.1"


async def test_resolve_localhost() -> None:
    """localhost resolves to a loopback address."""
    assert await resolve("localhost", 80) in ("127.0.0.1", "::1")


def test_a_stuck_lookup_does_not_hold_up_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run cancelled during a hung DNS lookup lets asyncio.run return at once."""
    release = threading.Event()
    entered: list[Callable[[], object]] = []  # how the hung lookup tells the loop it began

    def stuck(*args: object, **kwargs: object) -> list[object]:
        # The system resolver is the boundary here: a real hang needs an unreachable DNS.
        entered[0]()
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "gave up")

    monkeypatch.setattr(socket, "getaddrinfo", stuck)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hung = asyncio.Event()
        entered.append(lambda: loop.call_soon_threadsafe(hung.set))
        task = asyncio.create_task(resolve("stuck.example", 443))
        await hung.wait()  # the lookup is in its thread, stuck
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    start = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - start
    release.set()
    assert elapsed < 2.0
