"""The daemon's HTTP server against hostile clients: the real app, raw sockets on loopback."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, InvalidHeader
from yarl import URL

from spikewatch.daemon.api import create_app
from spikewatch.daemon.http_guard import (
    MAX_CONNECTIONS,
    SECURITY_HEADERS,
    ConnectionGuard,
    GuardedAppRunner,
    HttpLimits,
    LogBudget,
    error_kind,
    http_limits,
)
from spikewatch.target import RunningTarget
from tests.builders import daemon_document, reference_target, write_config
from tests.conftest import scaled
from tests.daemon.fakes import API_TOKEN, FakeDaemonState
from tests.daemon.proc import DaemonProcess

#: The daemon runs on uvloop by default; transports differ between the loops.
RUN_ON_EVERY_EVENT_LOOP = True

GUARD_LOG = "spikewatch.daemon.http_guard"
Serve = Callable[..., AbstractAsyncContextManager[int]]


@asynccontextmanager
async def serving(app: web.Application, limits: HttpLimits) -> AsyncIterator[int]:
    """Serve ``app`` as the daemon does, on 127.0.0.1 port 0, and yield the port."""
    runner = GuardedAppRunner(app, limits, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@pytest.fixture
def serve() -> Serve:
    """Return a context manager serving the daemon's real app under the given limits."""

    def start(**limits: Any) -> AbstractAsyncContextManager[int]:
        return serving(create_app(FakeDaemonState()), HttpLimits(**limits))

    return start


async def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and return all that comes back until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        async with asyncio.timeout(scaled(5)):
            return await reader.read()
    finally:
        writer.close()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection (EOF or reset); fail after 5 s."""
    data = b""
    async with asyncio.timeout(scaled(5)):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def head_of(answer: bytes) -> dict[str, str]:
    """Return the status line and header fields of an HTTP answer, names lower-cased."""
    head, _, _ = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = {"status": status}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def assert_security_headers(fields: dict[str, str]) -> None:
    """Assert the answer carries every security header with its value."""
    for name, value in SECURITY_HEADERS.items():
        assert fields.get(name.lower()) == value, (name, fields)


GET_HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
# The cases: a token file saved with CRLF or stray bytes, a long header, garbage.
MALFORMED = {
    "CR in Authorization": b"POST /-/reload HTTP/1.1\r\nAuthorization: Bearer %s\r\r\n\r\n",
    "NUL in Authorization": b"POST /-/reload HTTP/1.1\r\nAuthorization: Bearer %s\x00\r\n\r\n",
    "DEL in Authorization": b"POST /-/reload HTTP/1.1\r\nAuthorization: Bearer %s\x7f\r\n\r\n",
    "8 KiB header line": b"POST /-/reload HTTP/1.1\r\nAuthorization: Bearer %s"
    + b"x" * 8200
    + b"\r\n\r\n",
    "garbage request line": b"\x16\x03\x01 %s \x00\xff\r\n\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_request_is_logged_in_one_line_without_what_it_sent(
    serve: Serve, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed request: one INFO line with peer and kind, no traceback, no token anywhere."""
    caplog.set_level(logging.DEBUG)
    async with serve() as port:
        answer = await exchange(port, MALFORMED[case] % API_TOKEN.encode())
    assert API_TOKEN.encode() not in answer
    fields = head_of(answer)
    assert fields["status"].split()[1] == "400"
    assert_security_headers(fields)
    assert answer.endswith(b'"}')  # a JSON error, like every other error of the API
    for record in caplog.records:
        assert API_TOKEN not in record.getMessage(), record.getMessage()
        assert record.exc_info is None, record.getMessage()
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].name == GUARD_LOG
    assert lines[0].getMessage().startswith("malformed HTTP request from 127.0.0.1:")


async def test_connections_that_send_nothing_are_closed_after_the_head_timeout(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections with no request head are closed at the head timeout, in one log line."""
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    async with serve(head_timeout=scaled(0.2)) as port:
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            for reader, _ in connections:
                assert await until_closed(reader) == b""
        finally:
            for _, writer in connections:
                writer.close()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("HTTP connection from 127.0.0.1:")
    assert "closed: no complete request head within 0.2s; 0 more closed since" in line


async def test_a_client_that_leaves_before_its_head_frees_its_place(serve: Serve) -> None:
    """A connection closed by its client before a complete head no longer counts."""
    async with serve(max_connections=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        writer.write_eof()
        try:
            assert await until_closed(reader) == b""
        finally:
            writer.close()
        answer = await exchange(
            port, GET_HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
    assert head_of(answer)["status"] == "HTTP/1.1 200 OK"


async def test_a_head_sent_byte_by_byte_is_closed_at_the_head_timeout(serve: Serve) -> None:
    """A slowloris head (one byte now and then) does not keep its connection open."""
    async with serve(head_timeout=scaled(0.3)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def trickle() -> None:
            # The attack's own pace: a byte every tenth of the timeout, never the head's end.
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(scaled(0.03))

        sender = asyncio.create_task(trickle())
        try:
            assert await until_closed(reader) == b""
        finally:
            sender.cancel()
            writer.close()


async def test_a_later_head_sent_byte_by_byte_is_closed_at_the_head_timeout(
    serve: Serve,
) -> None:
    """On a kept-alive connection, a trickled second head is closed at the head timeout."""
    async with serve(head_timeout=scaled(0.3), keepalive_timeout=scaled(60)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET_HEALTHZ)
        async with asyncio.timeout(scaled(5)):
            await reader.readuntil(b'{"status": "ok"}')

        async def trickle() -> None:
            # The attack's own pace: a byte every tenth of the timeout, never the head's end.
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([byte]))
                await asyncio.sleep(scaled(0.03))

        sender = asyncio.create_task(trickle())
        try:
            assert await until_closed(reader) == b""
        finally:
            sender.cancel()
            writer.close()


async def test_an_idle_kept_alive_connection_is_closed_at_the_keepalive_timeout(
    serve: Serve,
) -> None:
    """After an answer, a kept-alive connection left idle is closed at the keep-alive timeout."""
    async with serve(keepalive_timeout=scaled(0.2)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(GET_HEALTHZ)
            answer = await until_closed(reader)
        finally:
            writer.close()
    assert head_of(answer)["status"] == "HTTP/1.1 200 OK"
    assert answer.endswith(b'{"status": "ok"}')


async def test_a_kept_alive_connection_serves_requests_past_the_head_timeout(
    serve: Serve,
) -> None:
    """The head timeout bounds the first head only; the connection then serves on."""
    async with serve(head_timeout=scaled(0.1)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(2):
                writer.write(GET_HEALTHZ)
                async with asyncio.timeout(scaled(5)):
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head_of(head)["content-length"])
                    await reader.readexactly(length)
                # Past the head timeout: the second request is still served.
                await asyncio.sleep(scaled(0.2))
        finally:
            writer.close()


async def test_connections_past_the_bound_are_closed_at_once_with_one_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """Past max_connections a connection is closed unanswered, logged once a minute."""
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    held = []
    async with serve(max_connections=3) as port:
        try:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                held.append((reader, writer))
                writer.write(GET_HEALTHZ)  # answered: the server counts this one
                async with asyncio.timeout(scaled(5)):
                    await reader.readuntil(b'{"status": "ok"}')
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(GET_HEALTHZ)
                    assert await until_closed(reader) == b""
                finally:
                    writer.close()
            # The connections under the bound are still served.
            reader, writer = held[0]
            writer.write(GET_HEALTHZ)
            async with asyncio.timeout(scaled(5)):
                await reader.readuntil(b'{"status": "ok"}')
        finally:
            for _, writer in held:
                writer.close()
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith("HTTP connection from 127.0.0.1:")
    assert "closed at once: 3 connections open, the bound" in line.getMessage()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/targets"),
        ("GET", "/api/v1/runs/nope"),
        ("POST", "/-/reload"),
        ("GET", "/no/such/page"),
        ("HEAD", "/metrics"),
    ],
)
async def test_every_answer_carries_the_security_headers(
    serve: Serve, method: str, path: str
) -> None:
    """Answers of every kind, errors and /metrics included, carry the security headers."""
    async with serve() as port:
        raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = await exchange(port, raw.encode())
    assert_security_headers(head_of(answer))


async def test_the_status_page_keeps_its_content_security_policy(serve: Serve) -> None:
    """The status page keeps its CSP beside the security headers."""
    async with serve() as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    fields = head_of(answer)
    assert_security_headers(fields)
    assert fields["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"


async def test_an_unexpected_server_error_keeps_aiohttps_answer_and_gets_the_headers() -> None:
    """An error outside any middleware is still aiohttp's 500, with the security headers."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/", broken)
    async with serving(app, HttpLimits()) as port:
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    fields = head_of(answer)
    assert fields["status"] == "HTTP/1.1 500 Internal Server Error"
    assert_security_headers(fields)


def test_the_log_budget_holds_back_lines_past_it_and_counts_them() -> None:
    """LogBudget allows `lines` per interval and reports how many it held back."""
    now = [0.0]
    budget = LogBudget(lines=2, interval=60.0, clock=lambda: now[0])
    assert [budget.take(), budget.take(), budget.take(), budget.take()] == [0, 0, None, None]
    now[0] = 59.9
    assert budget.take() is None
    now[0] = 60.0
    assert budget.take() == 3
    assert budget.take() == 0


def test_malformed_lines_past_the_budget_are_counted_in_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ten malformed-request lines a minute, the next line says how many were not logged."""
    caplog.set_level(logging.INFO, logger=GUARD_LOG)
    now = [0.0]
    guard = ConnectionGuard(HttpLimits(), clock=lambda: now[0])
    for _ in range(15):
        guard.malformed("127.0.0.1:1", InvalidHeader(API_TOKEN))
    now[0] = 60.0
    guard.malformed("127.0.0.1:2", InvalidHeader(API_TOKEN))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 11
    assert messages[-1] == (
        "malformed HTTP request from 127.0.0.1:2: invalid header, answered 400 and closed;"
        " 5 more not logged"
    )
    assert all(API_TOKEN not in m for m in messages)


def test_an_unknown_parse_error_is_named_by_its_status() -> None:
    """A parse error of a kind not named by this module is named by its status code."""
    assert error_kind(HttpProcessingError(code=431, message=API_TOKEN)) == "HTTP error 431"


@pytest.mark.parametrize(
    ("fd_limit", "bound"),
    [(1 << 20, MAX_CONNECTIONS), (256, 64), (16, 8), (resource.RLIM_INFINITY, MAX_CONNECTIONS)],
)
def test_the_connection_bound_is_at_most_a_quarter_of_the_descriptors(
    fd_limit: int, bound: int
) -> None:
    """The default bound leaves three quarters of the descriptors to the runs."""
    assert http_limits(fd_limit).max_connections == bound


def test_the_default_limits_read_the_process_descriptor_limit() -> None:
    """Without an fd limit given, the bound follows this process's RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert http_limits() == http_limits(soft)


async def test_the_daemon_logs_a_token_with_a_stray_cr_as_one_line_without_it(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """The real daemon: the issue's CRLF token and long header give one quiet line each."""
    token_file = tmp_path / "token"
    token_file.write_text(API_TOKEN + "\n")
    document = daemon_document([reference_target(reference.url)], token_file=token_file, every="1h")
    daemon = await DaemonProcess(write_config(tmp_path / "c.yaml", document)).start()
    try:
        port = URL(daemon.base).port
        assert port is not None
        for case in ("CR in Authorization", "8 KiB header line"):
            answer = await exchange(port, MALFORMED[case] % API_TOKEN.encode())
            assert_security_headers(head_of(answer))
        await daemon.wait_for_line(lambda _: daemon.count("malformed HTTP request") == 2, 10)
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait(15) == 0
    finally:
        await daemon.stop()
    text = "\n".join(daemon.lines)
    assert API_TOKEN not in text
    assert "Traceback" not in text
    assert " ERROR " not in text
