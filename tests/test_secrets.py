"""Secrets never leave the prober: not in the CLI's output, logs, metrics or API answers.

Distinctive secrets are planted in a config (a JWT HMAC secret and an RSA private key in
files, the API token in a file, an API key in a target header); every output the
prober produces is then searched for each of them, and for each line of the PEM body.
Each searched output is checked to be non-empty, so that no search passes vacuously.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests import hostile
from tests.builders import WELCOME, daemon_document, write_config
from tests.conftest import scaled
from tests.daemon.proc import DaemonProcess

JWT_SECRET = "hs256-PLANTED-jwt-secret-7f3a9c1e5b2d4f6a8c0e"
API_TOKEN = "PLANTED-api-token-2b4d6f8a0c1e3a5b"
HEADER_SECRET = "PLANTED-x-api-key-9e8d7c6b5a4f3e2d"
COOKIE_SECRET = "PLANTED-cookie-session-1a2b3c4d5e6f7a8b"
WRONG_TOKEN = "not-the-token"
AUDIENCE = "staging"


@dataclass(frozen=True)
class Planted:
    """The secret files of one test, and every string that must never be printed."""

    jwt_secret_file: Path
    private_key_file: Path
    api_token_file: Path
    public_key: str
    needles: tuple[str, ...]


def _rsa_pair() -> tuple[str, str]:
    """Return (private key PEM, public key PEM) of a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[str, str]:
    return _rsa_pair()


@pytest.fixture
def planted(tmp_path: Path, rsa_pair: tuple[str, str]) -> Planted:
    private, public = rsa_pair
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "jwt-secret").write_text(JWT_SECRET)
    (secrets / "jwt-key.pem").write_text(private)
    (secrets / "api-token").write_text(API_TOKEN)
    body = [line for line in private.splitlines() if line and not line.startswith("-----")]
    return Planted(
        jwt_secret_file=secrets / "jwt-secret",
        private_key_file=secrets / "jwt-key.pem",
        api_token_file=secrets / "api-token",
        public_key=public,
        needles=(JWT_SECRET, API_TOKEN, HEADER_SECRET, COOKIE_SECRET, *body),
    )


def assert_no_secret(
    what: str, output: str | bytes, planted: Planted, *, shown: tuple[str, ...] = ()
) -> None:
    """Assert ``output`` is not empty and holds none of the planted secrets but ``shown``."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    assert text.strip(), f"{what}: empty, so the search would prove nothing"
    for needle in set(planted.needles) - set(shown):
        assert needle not in text, f"{what} leaks a secret: {needle[:12]}…"


def jwt_document(
    planted: Planted, hs_url: str, rs_url: str, *, listen: str = "127.0.0.1:0"
) -> dict[str, Any]:
    """Return a config with two JWT targets (HS256 with an API key header, and RS256)."""
    claims = {"sub": "spikewatch-{conn}", "aud": AUDIENCE}
    targets = [
        {
            "name": "hs",
            "url": hs_url,
            "headers": {"X-Api-Key": HEADER_SECRET, "Cookie": f"session={COOKIE_SECRET}"},
            "welcome": {"match": WELCOME},
            "auth": {
                "jwt": {
                    "algorithm": "HS256",
                    "secret_file": str(planted.jwt_secret_file),
                    "claims": claims,
                }
            },
        },
        {
            "name": "rs",
            "url": rs_url,
            "welcome": {"match": WELCOME},
            "auth": {
                "jwt": {
                    "algorithm": "RS256",
                    "private_key_file": str(planted.private_key_file),
                    "claims": claims,
                    "send_as": "query:access_token",
                }
            },
        },
    ]
    return daemon_document(
        targets,
        token_file=planted.api_token_file,
        listen=listen,
        log={"format": "json", "level": "debug"},
        # These tests are about secrets, not timing: a shared machine's stall during the
        # short baseline (seen: loop lag p99 113 ms) must not make a run "invalid".
        prober={"max_loop_lag_p99": "5s", "max_start_lateness_p99": "5s"},
        spike={"connections": 3},
    )


@asynccontextmanager
async def jwt_targets(planted: Planted) -> AsyncIterator[tuple[RunningTarget, RunningTarget]]:
    """Start two reference targets: one checks HS256 tokens, the other RS256 tokens."""
    hs = TargetBehaviour(jwt_key=JWT_SECRET, jwt_audience=AUDIENCE)
    rs = TargetBehaviour(
        jwt_key=planted.public_key, jwt_algorithms=("RS256",), jwt_audience=AUDIENCE
    )
    async with (
        await start_reference_target(hs) as hs_target,
        await start_reference_target(rs) as rs_target,
    ):
        yield hs_target, rs_target


def assert_tokens_were_accepted(*targets: RunningTarget) -> None:
    """Assert the secrets were really used: every target upgraded with minted tokens."""
    for target in targets:
        stats = target.stats()
        assert stats.upgrades > 0
        assert stats.rejected_auth == 0


async def spikewatch(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a subprocess without blocking the loop; return (status, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spikewatch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), scaled(30))
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def test_check_config_prints_no_secret(tmp_path: Path, planted: Planted) -> None:
    """check-config's effective config masks the JWT keys, the API token and header values."""
    path = write_config(
        tmp_path / "c.yaml", jwt_document(planted, "ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws")
    )
    status, out, err = await spikewatch("check-config", str(path))
    assert status == 0, err
    assert "hs" in out
    assert "X-Api-Key: '***'" in out
    assert_no_secret("check-config output", out + err, planted)


@pytest.mark.parametrize("target", ["hs", "rs"])
async def test_once_json_prints_no_secret(tmp_path: Path, planted: Planted, target: str) -> None:
    """once --json against JWT-checking targets passes, and neither stream holds a secret."""
    async with jwt_targets(planted) as (hs, rs):
        path = write_config(tmp_path / "c.yaml", jwt_document(planted, hs.url, rs.url))
        status, out, err = await spikewatch(
            "once", "--config", str(path), "--target", target, "--scenario", "quick", "--json"
        )
        assert_tokens_were_accepted(hs if target == "hs" else rs)
    assert status == 0, out + err
    assert json.loads(out)["result"] == "passed"
    assert_no_secret("once --json stdout", out, planted)
    assert_no_secret("once --json stderr", err, planted)


#: One wrong field each, next to the secrets: (path in the document, value).
BAD_FIELDS: dict[str, tuple[tuple[str | int, ...], Any]] = {
    "another field": (("scenarios", 0, "spike", "connections"), 0),
    "the JWT algorithm": (("targets", 0, "auth", "jwt", "algorithm"), "HS999"),
    "the JWT ttl": (("targets", 0, "auth", "jwt", "ttl"), "soon"),
    "an RS256 key for HS256": (("targets", 1, "auth", "jwt", "algorithm"), "HS256"),
    "an HS256 secret for RS256": (("targets", 0, "auth", "jwt", "algorithm"), "RS256"),
    "the header name": (("targets", 0, "headers"), {"X Api Key": HEADER_SECRET}),
    "the header value": (("targets", 0, "headers"), {"X-Api-Key": HEADER_SECRET + "\n"}),
}


@pytest.mark.parametrize("wrong", list(BAD_FIELDS))
async def test_config_errors_print_no_secret(tmp_path: Path, planted: Planted, wrong: str) -> None:
    """A bad config with the secret files in place is refused without quoting a secret."""
    doc = jwt_document(planted, "ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws")
    (*parents, last), value = BAD_FIELDS[wrong]
    node: Any = doc
    for key in parents:
        node = node[key]
    node[last] = value
    path = write_config(tmp_path / "c.yaml", doc)
    for args in (
        ("check-config", str(path)),
        ("once", "--config", str(path), "--target", "hs", "--scenario", "quick"),
    ):
        status, out, err = await spikewatch(*args)
        assert status == 2, out + err
        assert "Traceback" not in err
        assert_no_secret(f"{args[0]} error", out + err, planted)


#: The base URL in the daemon's "listening on" line, without JSON's closing quote.
_BASE = re.compile(r"http://[^\s\"/]+")


@asynccontextmanager
async def running(daemon: DaemonProcess) -> AsyncIterator[DaemonProcess]:
    """Start the daemon; kill it on the way out unless it was stopped."""
    try:
        await daemon.start()
        # DaemonProcess takes up to the next space, the JSON log line's '"}' included.
        match = _BASE.match(daemon.base)
        assert match is not None, daemon.base
        daemon.base = match.group(0)
        yield daemon
    finally:
        await daemon.stop()


async def test_daemon_outputs_hold_no_secret(tmp_path: Path, planted: Planted) -> None:
    """Logs (json, debug), metrics, API answers, errors and the page hold no secret."""
    async with jwt_targets(planted) as (hs, rs):
        path = write_config(tmp_path / "c.yaml", jwt_document(planted, hs.url, rs.url))
        daemon = DaemonProcess(path)
        async with running(daemon):
            await daemon.wait_for_line(lambda _: daemon.count("run finished") >= 3, 30)
            answers: dict[str, bytes] = {}
            for page in ("/metrics", "/api/v1/targets", "/api/v1/runs", "/"):
                status, _, body = await daemon.request("GET", page)
                assert status == 200, page
                answers[page] = body
            run_id = json.loads(answers["/api/v1/runs"])["runs"][0]["id"]
            status, _, answers["one run"] = await daemon.request("GET", f"/api/v1/runs/{run_id}")
            assert status == 200
            run_now = {"target": "hs", "scenario": "quick"}
            status, _, answers["401"] = await daemon.request(
                "POST", "/api/v1/runs", json=run_now, token=WRONG_TOKEN
            )
            assert status == 401
            status, _, answers["404"] = await daemon.request("GET", "/api/v1/runs/no-such-run")
            assert status == 404
            status, _, answers["202"] = await daemon.request(
                "POST", "/api/v1/runs", json=run_now, token=API_TOKEN
            )
            assert status == 202
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait(15) == 0
        assert_tokens_were_accepted(hs, rs)
    for what, body in answers.items():
        assert_no_secret(what, body, planted)
    # The effective config is logged at debug level: the masked secrets are there, as ***.
    assert any('"level"' in line and "effective spikewatch config" in line for line in daemon.lines)
    assert_no_secret("daemon stderr", "\n".join(daemon.lines), planted)


async def accepts(address: str, port: int, family: socket.AddressFamily) -> bool:
    """Return whether a TCP connection to ``address``:``port`` is accepted."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, family=family), scaled(5)
        )
    except OSError:  # refused, or no such address on this machine
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_daemon_listens_only_where_configured(tmp_path: Path, planted: Planted) -> None:
    """With listen 127.0.0.1:PORT, the same port on another local address is refused."""
    port = hostile.unused_port()
    path = write_config(
        tmp_path / "c.yaml",
        jwt_document(
            planted, "ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws", listen=f"127.0.0.1:{port}"
        ),
    )
    async with running(DaemonProcess(path)) as daemon:
        assert daemon.base == f"http://127.0.0.1:{port}"
        assert await accepts("127.0.0.1", port, socket.AF_INET)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.2", port)
        assert not await accepts("::1", port, socket.AF_INET6)
