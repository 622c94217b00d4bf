"""Build connection specs for engine tests without a config file."""

from __future__ import annotations

import re
import ssl
from urllib.parse import urlsplit

from spikewatch.auth.jwt import TokenMinter
from spikewatch.engine.spec import ConnectionSpec
from spikewatch.protocol.handshake import UpgradeRequest


def make_spec(
    url: str,
    *,
    welcome: str | None = None,
    echo: tuple[str, str] | None = None,
    handshake_timeout: float = 2.0,
    welcome_timeout: float = 1.0,
    echo_timeout: float = 1.0,
    close_timeout: float = 1.0,
    max_message_bytes: int = 1 << 20,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    subprotocols: tuple[str, ...] = (),
    minter: TokenMinter | None = None,
    send_as: str = "header",
    query_param: str | None = None,
) -> ConnectionSpec:
    """Return a spec for ``url`` with the given expectations."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    echo_payload, echo_match = echo if echo else (None, None)
    echo_pattern = None
    if echo_match is not None and "{seq}" not in echo_match and "{conn}" not in echo_match:
        echo_pattern = re.compile(echo_match)
    return ConnectionSpec(
        address=parts.hostname,
        port=parts.port,
        ssl=ssl_context,
        server_hostname=server_hostname,
        request=UpgradeRequest(
            resource=parts.path or "/",
            host_header=parts.netloc,
            subprotocols=subprotocols,
        ),
        handshake_timeout=handshake_timeout,
        close_timeout=close_timeout,
        welcome=re.compile(welcome) if welcome is not None else None,
        welcome_timeout=welcome_timeout,
        echo_payload=echo_payload,
        echo_match=echo_match,
        echo_pattern=echo_pattern,
        echo_timeout=echo_timeout,
        max_message_bytes=max_message_bytes,
        minter=minter,
        send_as=send_as,  # type: ignore[arg-type]
        query_param=query_param,
    )
