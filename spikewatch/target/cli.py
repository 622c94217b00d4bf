"""``spikewatch target``: serve the reference target from the command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

from spikewatch.config.durations import parse_duration
from spikewatch.errors import SpikewatchError, UsageError
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import start_reference_target

DEFAULT_LISTEN = "127.0.0.1:8765"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: JWS algorithm for each elliptic curve (RFC 7518 §3.4, RFC 8812 §3.2).
_CURVE_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_CURVE_ALGORITHMS["secp256k1"] = "ES256K"

_DEFAULTS = TargetBehaviour()


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port_text)


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {minimum}, got {text!r}")
        return int(text)

    return parse


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the reference target's options to ``parser``."""
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=_listen_address(DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"address to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    parser.add_argument("--path", default=_DEFAULTS.path, help="WebSocket path (default /ws)")
    parser.add_argument(
        "--app-version",
        metavar="VERSION",
        help="report this version in the 101 answer's X-App-Version and at GET /version"
        ' (change it with POST /degrade {"version": ...})',
    )
    parser.add_argument(
        "--no-welcome",
        dest="welcome",
        action="store_false",
        help='do not send {"type":"welcome","conn":N} on connect',
    )
    durations = (
        ("--handshake-delay", _DEFAULTS.handshake_delay, "latency added to every upgrade"),
        ("--burst-window", _DEFAULTS.burst_window, "window in which a burst is counted"),
        ("--recovery-delay", _DEFAULTS.recovery_delay, "degraded this long after a burst"),
        ("--slow-delay", _DEFAULTS.slow_delay, "latency added to upgrades while degraded"),
    )
    for flag, default, text in durations:
        parser.add_argument(
            flag,
            type=_seconds,
            default=default,
            metavar="DURATION",
            help=f"{text} (seconds, or like 250ms, 5s; default {default:g}s)",
        )
    parser.add_argument(
        "--capacity",
        type=_whole(0),
        metavar="N",
        help="most open WebSockets at once; beyond it, upgrades get 503 (default: no limit)",
    )
    parser.add_argument(
        "--burst-threshold",
        type=_whole(1),
        metavar="N",
        help="this many upgrade requests within --burst-window make a burst (default: off)",
    )
    parser.add_argument(
        "--drop-on-burst",
        action="store_true",
        help="on a burst, close (1012) every connection opened before it",
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--jwt-secret-file", type=Path, metavar="FILE", help="HMAC secret")
    keys.add_argument(
        "--jwt-public-key-file", type=Path, metavar="FILE", help="PEM public key (RS, PS, ES, Ed)"
    )
    parser.add_argument(
        "--jwt-algorithm",
        action="append",
        dest="jwt_algorithms",
        metavar="ALG",
        help="accepted JWS algorithm, repeatable (default: HS256, or the public key's own)",
    )
    parser.add_argument("--jwt-audience", metavar="AUD", help="required aud claim")
    parser.add_argument(
        "--subprotocol",
        action="append",
        dest="subprotocols",
        default=[],
        metavar="NAME",
        help="subprotocol the target accepts, repeatable",
    )
    parser.add_argument("--tls-cert-file", type=Path, metavar="FILE", help="serve wss://")
    parser.add_argument("--tls-key-file", type=Path, metavar="FILE", help="key of the cert")


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc}") from None


def _public_key_algorithm(pem: str, path: Path) -> str:
    """Return the JWS algorithm that goes with a PEM public key."""
    # Here, not at the top: cryptography costs ~9 MB of RSS to every spikewatch command.
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import load_pem_public_key  # noqa: PLC0415

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_ALGORITHMS:
        return _CURVE_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise UsageError(f"{path}: no JWT algorithm known for this key; pass --jwt-algorithm")


def behaviour_from_args(args: argparse.Namespace) -> TargetBehaviour:
    """Build the target's knobs from parsed arguments; raise SpikewatchError if unusable."""
    jwt_key: str | None = None
    algorithms: tuple[str, ...] = tuple(args.jwt_algorithms or ()) or _DEFAULTS.jwt_algorithms
    if args.jwt_secret_file is not None:
        # A trailing newline is an artefact of how secret files are written, not key material.
        jwt_key = _read_text(args.jwt_secret_file, "JWT secret file").rstrip("\r\n")
        if not jwt_key:
            raise UsageError(f"the JWT secret file {args.jwt_secret_file} is empty")
    elif args.jwt_public_key_file is not None:
        jwt_key = _read_text(args.jwt_public_key_file, "JWT public key file")
        inferred = _public_key_algorithm(jwt_key, args.jwt_public_key_file)
        algorithms = tuple(args.jwt_algorithms or ()) or (inferred,)
    elif args.jwt_algorithms or args.jwt_audience is not None:
        raise UsageError(
            "--jwt-algorithm and --jwt-audience need --jwt-secret-file or --jwt-public-key-file"
        )
    return TargetBehaviour(
        path=args.path,
        welcome=args.welcome,
        handshake_delay=args.handshake_delay,
        capacity=args.capacity,
        burst_threshold=args.burst_threshold,
        burst_window=args.burst_window,
        recovery_delay=args.recovery_delay,
        slow_delay=args.slow_delay,
        drop_on_burst=args.drop_on_burst,
        jwt_key=jwt_key,
        jwt_algorithms=algorithms,
        jwt_audience=args.jwt_audience,
        subprotocols=tuple(args.subprotocols),
        version=args.app_version,
    )


def tls_context_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Return a server TLS context from ``--tls-cert-file``/``--tls-key-file``, or None."""
    cert, key = args.tls_cert_file, args.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None:
        raise UsageError("--tls-key-file needs --tls-cert-file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert}: {exc}") from None
    return context


async def serve_target(
    behaviour: TargetBehaviour,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """Serve the reference target until SIGINT or SIGTERM, then close it gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # A coroutine run by asyncio.run or a test is always inside a task.
    main = cast("asyncio.Task[int]", asyncio.current_task())

    def on_signal() -> None:
        # A second signal gives up on the graceful close.
        if stop.is_set():
            main.cancel()
        stop.set()

    try:
        target = await start_reference_target(behaviour, host, port, ssl_context)
    except OSError as exc:
        print(f"spikewatch target: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    try:
        print(
            f"spikewatch target: serving {target.url} (stats: {target.http_url}/stats)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        await target.close()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await target.close()
    return EXIT_OK


def run_target_command(args: argparse.Namespace) -> int:
    """Run ``spikewatch target`` with parsed arguments; return the exit status."""
    try:
        behaviour = behaviour_from_args(args)
        ssl_context = tls_context_from_args(args)
    except SpikewatchError as exc:
        print(f"spikewatch target: {exc}", file=sys.stderr)
        return EXIT_USAGE
    host, port = args.listen
    try:
        return asyncio.run(serve_target(behaviour, host, port, ssl_context))
    except asyncio.CancelledError:
        print("spikewatch target: stopped without a graceful close", file=sys.stderr)
        return EXIT_FAILED
