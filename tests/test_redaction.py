"""A target that reflects credentials, or sends terminal controls, leaks nothing (issue 12).

A raw server on loopback answers every upgrade with a 401 whose reason phrase quotes
what it was sent: the minted JWT (Authorization), the API key header and the request
target with its query token. None of these may reach ``once``'s outputs, the daemon's
API answer for the run, or its logs. Another answers with control characters in a close
reason and a 10 KB reason phrase: ``once``'s summary stays printable and bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spikewatch.core.redact import LINE_LIMIT, MASK
from tests import hostile
from tests.builders import daemon_document, write_config
from tests.daemon.proc import DaemonProcess
from tests.test_secrets import running, spikewatch

JWT_SECRET = "hs256-REFLECTED-jwt-secret-5c7e9a1b3d"
HEADER_SECRET = "REFLECTED-x-api-key-4f6a8c0e2b"
QUERY_SECRET = "REFLECTED-query-token-8d0f2b4c6e"


def reflecting_server() -> hostile.HostileServer:
    """Answer each upgrade with a 401 whose reason phrase quotes the request's credentials."""

    async def handle(connection: hostile.HostileConnection) -> None:
        head = await connection.read_request()
        reason = (
            f"denied {head.header('authorization')} key={head.header('x-api-key')} "
            f"for {head.target}"
        )
        await connection.send(f"HTTP/1.1 401 {reason}\r\nConnection: close\r\n\r\n".encode())

    return hostile.HostileServer(handle)


def reflecting_document(url: str, **kwargs: Any) -> dict[str, Any]:
    """Return a config whose target carries a JWT, an API key header and a query token."""
    target = {
        "name": "reflect",
        "url": f"{url}?token={QUERY_SECRET}",
        "headers": {"X-Api-Key": HEADER_SECRET},
        "auth": {"jwt": {"algorithm": "HS256", "secret": JWT_SECRET}},
    }
    return daemon_document([target], **kwargs)


def needles(server: hostile.HostileServer) -> set[str]:
    """Return every secret the server was sent: the configured ones and each minted JWT."""
    minted = {
        (head.header("authorization") or "").removeprefix("Bearer ") for head in server.requests
    }
    assert minted, "no request reached the server"
    return {JWT_SECRET, HEADER_SECRET, QUERY_SECRET, *minted}


def assert_no_secret(what: str, text: str, secrets: set[str]) -> None:
    """Assert ``text`` is not empty and holds none of ``secrets``."""
    assert text.strip(), f"{what}: empty, so the search would prove nothing"
    for secret in secrets:
        assert secret not in text, f"{what} leaks {secret[:16]}…"


def assert_masked(what: str, text: str, secrets: set[str]) -> None:
    """Assert ``text`` holds none of ``secrets``, and the reflected reason, masked."""
    assert_no_secret(what, text, secrets)
    assert f"denied Bearer {MASK} key={MASK} for /ws?token={MASK}" in text, text[-400:]


async def test_once_masks_credentials_a_target_reflects(tmp_path: Path) -> None:
    """once --json and once's summary mask the JWT, header value and query token reflected."""
    async with reflecting_server() as server:
        path = write_config(tmp_path / "c.yaml", reflecting_document(server.url))
        args = ("once", "--config", str(path), "--target", "reflect", "--scenario", "quick")
        _, out_json, err_json = await spikewatch(*args, "--json")
        _, out, err = await spikewatch(*args)
        secrets = needles(server)
    assert json.loads(out_json)["result"] == "target_down"
    assert_masked("once --json", out_json, secrets)
    assert_masked("once summary", out, secrets)
    assert_no_secret("once --json stderr", err_json, secrets)
    assert_no_secret("once stderr", err, secrets)


async def test_daemon_masks_credentials_a_target_reflects(tmp_path: Path) -> None:
    """The daemon's API answer for the run and its logs (debug) mask what a target reflects."""
    async with reflecting_server() as server:
        doc = reflecting_document(server.url, log={"format": "json", "level": "debug"})
        daemon = DaemonProcess(write_config(tmp_path / "c.yaml", doc))
        async with running(daemon):
            await daemon.wait_for_line(lambda _: daemon.count("run finished") >= 1, 30)
            status, _, runs = await daemon.request("GET", "/api/v1/runs")
            assert status == 200
            run_id = json.loads(runs)["runs"][0]["id"]
            status, _, answer = await daemon.request("GET", f"/api/v1/runs/{run_id}")
            assert status == 200
        secrets = needles(server)
    assert_masked("GET /api/v1/runs/{id}", answer.decode(), secrets)
    assert_no_secret("daemon logs", "\n".join(daemon.lines), secrets)


def controls_server() -> hostile.HostileServer:
    """Odd connections: a close reason with ESC, BEL, CR/LF and C1; even ones: a 10 KB 503."""
    reason = "\x1b]0;owned\x07\x1b[2J\r\nFAKE log line\x9b\x7f"

    async def handle(connection: hostile.HostileConnection) -> None:
        if connection.server.accepted % 2:
            head = await connection.read_request()
            await connection.send(
                hostile.switching_protocols(head.header("sec-websocket-key") or "")
            )
            payload = hostile.close_payload(1008, reason)
            await connection.send(hostile.encode_frame(hostile.Opcode.CLOSE, payload))
        else:
            await connection.read_request()
            phrase = "x" * 10_000
            await connection.send(f"HTTP/1.1 503 {phrase}\r\nConnection: close\r\n\r\n".encode())

    return hostile.HostileServer(handle)


async def test_once_summary_lines_are_printable_and_bounded(tmp_path: Path) -> None:
    """Target control characters are escaped (summary, --json); a 10 KB reason is cut."""
    async with controls_server() as server:
        target = {"name": "ctl", "url": server.url, "welcome": {"match": "hello"}}
        path = write_config(tmp_path / "c.yaml", daemon_document([target]))
        args = ("once", "--config", str(path), "--target", "ctl", "--scenario", "quick")
        _, out, err = await spikewatch(*args)
        _, out_json, _ = await spikewatch(*args, "--json")
    # --json escapes them itself (json.dumps: \uXXXX for C0, DEL and every non-ASCII).
    assert "\\u001b]0;owned\\u0007" in out_json, out_json
    assert all(c == "\n" or " " <= c <= "~" for c in out_json)
    assert "\\x1b]0;owned\\x07" in out, out  # the close reason is there, escaped
    assert "xxxxxxxxxx" in out, out  # so is the long reason phrase, cut
    for line in (out + err).splitlines():
        assert len(line) <= LINE_LIMIT, line[:80]
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line), repr(line[:80])
    assert "FAKE log line" not in [line.strip() for line in out.splitlines()]
