"""``spikewatch target`` options, and serving until a signal."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from spikewatch.errors import UsageError
from spikewatch.target import cli
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.cli import (
    add_target_arguments,
    behaviour_from_args,
    run_target_command,
    serve_target,
    tls_context_from_args,
)
from spikewatch.target.server import RunningTarget, start_reference_target
from tests.conftest import scaled

SECRET = "reference-target-test-secret-0123456789"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spikewatch target")
    add_target_arguments(parser)
    return parser.parse_args(argv)


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def test_defaults_give_the_default_behaviour() -> None:
    """With no options the target listens on 127.0.0.1:8765 with the default knobs."""
    args = parse()
    assert args.listen == ("127.0.0.1", 8765)
    assert behaviour_from_args(args) == TargetBehaviour()
    assert tls_context_from_args(args) is None


def test_every_knob_has_an_option() -> None:
    """Each option sets its knob; durations take plain seconds or units."""
    args = parse(
        "--listen=localhost:9000",
        "--path=/ws/test",
        "--no-welcome",
        "--handshake-delay=250ms",
        "--capacity=100",
        "--burst-threshold=20",
        "--burst-window=2s",
        "--recovery-delay=30",
        "--slow-delay=0.5",
        "--drop-on-burst",
        "--subprotocol=chat.v1",
        "--subprotocol=chat.v2",
    )
    assert args.listen == ("localhost", 9000)
    assert behaviour_from_args(args) == TargetBehaviour(
        path="/ws/test",
        welcome=False,
        handshake_delay=0.25,
        capacity=100,
        burst_threshold=20,
        burst_window=2.0,
        recovery_delay=30.0,
        slow_delay=0.5,
        drop_on_burst=True,
        subprotocols=("chat.v1", "chat.v2"),
    )


def test_ipv6_listen_address() -> None:
    """--listen takes a bracketed IPv6 host."""
    assert parse("--listen=[::1]:0").listen == ("::1", 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen=8765"],
        ["--listen=:8765"],
        ["--listen=host:http"],
        ["--listen=host:70000"],
        ["--handshake-delay=soon"],
        ["--capacity=-1"],
        ["--burst-threshold=0"],
        ["--jwt-secret-file=a", "--jwt-public-key-file=b"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option value stops argparse with exit status 2."""
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    assert "error" in capsys.readouterr().err


def test_secret_file_without_its_trailing_newline(tmp_path: Path) -> None:
    """The JWT secret is the file's content without the trailing newline."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    behaviour = behaviour_from_args(
        parse(f"--jwt-secret-file={secret}", "--jwt-audience=staging", "--jwt-algorithm=HS256")
    )
    assert behaviour.jwt_key == SECRET
    assert behaviour.jwt_audience == "staging"
    assert behaviour.jwt_algorithms == ("HS256",)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"\n", "is empty"), (b"\xff\xfe", "cannot read")],
)
def test_unusable_secret_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    """A missing, empty or undecodable secret file is a UsageError naming it."""
    secret = tmp_path / "secret"
    if content is not None:
        secret.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        behaviour_from_args(parse(f"--jwt-secret-file={secret}"))


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ec.generate_private_key(ec.SECP256K1()), "ES256K"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
    ids=["rsa", "p384", "secp256k1", "ed25519"],
)
def test_public_key_implies_its_algorithm(tmp_path: Path, key: Any, algorithm: str) -> None:
    """Without --jwt-algorithm the public key's own algorithm is accepted."""
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_pem(key))
    behaviour = behaviour_from_args(parse(f"--jwt-public-key-file={pem}"))
    assert behaviour.jwt_algorithms == (algorithm,)
    assert behaviour.jwt_key == pem.read_text()


def test_explicit_algorithms_win_over_the_key(tmp_path: Path) -> None:
    """--jwt-algorithm replaces the algorithm the key implies."""
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    args = parse(f"--jwt-public-key-file={pem}", "--jwt-algorithm=PS256", "--jwt-algorithm=RS512")
    assert behaviour_from_args(args).jwt_algorithms == ("PS256", "RS512")


def test_unusable_public_keys(tmp_path: Path) -> None:
    """A file that is no PEM public key, or a key with no JWS algorithm, is a UsageError."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(UsageError, match="not a PEM public key"):
        behaviour_from_args(parse(f"--jwt-public-key-file={junk}"))
    odd = tmp_path / "p224.pem"
    odd.write_bytes(public_pem(ec.generate_private_key(ec.SECP224R1())))
    with pytest.raises(UsageError, match="pass --jwt-algorithm"):
        behaviour_from_args(parse(f"--jwt-public-key-file={odd}"))


def test_jwt_options_need_a_key() -> None:
    """--jwt-algorithm or --jwt-audience without a key file is a UsageError."""
    with pytest.raises(UsageError, match="need --jwt-secret-file"):
        behaviour_from_args(parse("--jwt-audience=staging"))


def test_tls_options(tmp_path: Path) -> None:
    """A cert and key make a server context; a key alone or a bad cert is a UsageError."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = tls_context_from_args(
        parse(f"--tls-cert-file={cert_file}", f"--tls-key-file={key_file}")
    )
    assert context is not None
    with pytest.raises(UsageError, match="needs --tls-cert-file"):
        tls_context_from_args(parse(f"--tls-key-file={key_file}"))
    with pytest.raises(UsageError, match="cannot load"):
        tls_context_from_args(parse(f"--tls-cert-file={key_file}"))


def test_run_target_command_refuses_bad_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage problem is one line on stderr and exit status 2, never a traceback."""
    assert run_target_command(parse(f"--jwt-secret-file={tmp_path / 'missing'}")) == 2
    err = capsys.readouterr().err
    assert err.startswith("spikewatch target: cannot read the JWT secret file")
    assert "Traceback" not in err


def signal_once_started(
    monkeypatch: pytest.MonkeyPatch, *signums: signal.Signals
) -> list[RunningTarget]:
    """Make the command's target send these signals to this process once it serves."""
    started: list[RunningTarget] = []

    async def start_then_signal(*args: Any, **kwargs: Any) -> RunningTarget:
        target = await start_reference_target(*args, **kwargs)
        started.append(target)
        # Runs after serve_target installed its handlers, which happens before it awaits.
        for signum in signums:
            asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signum)
        return target

    monkeypatch.setattr(cli, "start_reference_target", start_then_signal)
    return started


def test_run_target_command_serves_until_sigterm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command prints the URLs, serves, and exits 0 on SIGTERM with the listener closed."""
    started = signal_once_started(monkeypatch, signal.SIGTERM)
    assert run_target_command(parse("--listen=127.0.0.1:0")) == 0
    (target,) = started
    err = capsys.readouterr().err
    assert err == f"spikewatch target: serving {target.url} (stats: {target.http_url}/stats)\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_second_signal_gives_up_the_graceful_close(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second signal stops the command at once with exit status 1."""
    signal_once_started(monkeypatch, signal.SIGTERM, signal.SIGINT)
    assert run_target_command(parse("--listen=127.0.0.1:0")) == 1
    assert "without a graceful close" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


async def test_serve_target_closes_connections_on_signal() -> None:
    """On SIGINT the served target closes its WebSockets with 1001 and serve_target returns 0."""
    ready: asyncio.Future[RunningTarget] = asyncio.get_running_loop().create_future()
    real_start = start_reference_target

    async def start_and_report(*args: Any, **kwargs: Any) -> RunningTarget:
        target = await real_start(*args, **kwargs)
        ready.set_result(target)
        return target

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "start_reference_target", start_and_report)
        serving = asyncio.create_task(serve_target(TargetBehaviour(), "127.0.0.1", 0))
        target = await asyncio.wait_for(ready, scaled(5))
    async with aiohttp.ClientSession() as session, session.ws_connect(target.url) as ws:
        await ws.receive_str()
        os.kill(os.getpid(), signal.SIGINT)
        message = await ws.receive(timeout=scaled(5))
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001
    assert await asyncio.wait_for(serving, scaled(5)) == 0


async def test_serve_target_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use is one line on stderr and exit status 1."""
    async with await start_reference_target(TargetBehaviour()) as busy:
        assert await serve_target(TargetBehaviour(), "127.0.0.1", busy.port) == 1
    assert f"cannot listen on 127.0.0.1:{busy.port}" in capsys.readouterr().err


def test_option_help_mentions_units() -> None:
    """Duration options say they take units."""
    parser = argparse.ArgumentParser()
    add_target_arguments(parser)
    assert "250ms" in parser.format_help()
