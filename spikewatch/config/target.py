"""The ``targets`` section: WebSocket endpoints and what each is expected to say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from spikewatch.config.auth import AuthConfig
from spikewatch.config.compression import CompressionConfig
from spikewatch.config.conversation import (
    HeartbeatConfig,
    KeepaliveConfig,
    StepConfig,
    conversation_problems,
)
from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection, Name, compile_regex
from spikewatch.config.problems import Problems, invalid, path_key
from spikewatch.config.version import VersionConfig, capture_problem
from spikewatch.core.echo_template import fill_template

__all__ = ["EchoConfig", "TargetConfig", "TlsConfig", "WelcomeConfig"]

# RFC 9110 §5.6.2: header names, subprotocols (RFC 6455 §4.1) are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5 allows visible ASCII, space and tab in a field value; CR/LF would let a
# value smuggle in another header.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")


class WelcomeConfig(ConfigSection):
    """The message a target sends first after the upgrade."""

    match: str
    timeout: PositiveDuration = 2.0

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: str) -> str:
        compile_regex(value)
        return value

    @property
    def pattern(self) -> re.Pattern[str]:
        """Return ``match`` compiled."""
        return re.compile(self.match)


class EchoConfig(ConfigSection):
    """One message sent after the welcome, and what its answer must match."""

    #: ``{seq}`` and ``{conn}`` are replaced by the message and connection numbers.
    payload: str = Field(min_length=1)
    #: A regex; may use ``{seq}`` and ``{conn}`` too.
    match: str
    timeout: PositiveDuration = 2.0

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: str) -> str:
        compile_regex(fill_template(value, seq=0, conn=0))
        return value

    def payload_for(self, seq: int, conn: int) -> str:
        """Return the payload to send as message ``seq`` on connection ``conn``."""
        return fill_template(self.payload, seq=seq, conn=conn)

    def pattern_for(self, seq: int, conn: int) -> re.Pattern[str]:
        """Return the regex the answer to message ``seq`` on connection ``conn`` must match."""
        return re.compile(fill_template(self.match, seq=seq, conn=conn))


class TlsConfig(ConfigSection):
    """TLS settings for wss:// targets."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    @field_validator("server_name")
    @classmethod
    def _check_server_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._:-]+", value):
            raise ValueError("must be a host name, like staging.example.com")
        return value

    @model_validator(mode="after")
    def _check_key_file(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            raise invalid([("key_file", "needs cert_file")])
        return self

    @property
    def files(self) -> dict[str, Path]:
        """Return the files that are set, by field name."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {name: path for name, path in named.items() if path is not None}


# Set by the handshake itself (RFC 6455 §4.1) or meaningless on a GET without a body.
_MANAGED_HEADERS: Final = {
    "sec-websocket-protocol": "is derived from subprotocols",
    "upgrade": "is set by the WebSocket handshake",
    "connection": "is set by the WebSocket handshake",
    "sec-websocket-key": "is set by the WebSocket handshake",
    "sec-websocket-version": "is set by the WebSocket handshake",
    "sec-websocket-extensions": "is set from compression (compression: {deflate: true})",
    "content-length": "is not allowed: the upgrade request has no body",
    "transfer-encoding": "is not allowed: the upgrade request has no body",
}


def _url_problem(url: str) -> str | None:
    # urlsplit quietly drops tabs and newlines, so look at the raw text first.
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return "must be ASCII without spaces: percent-encode the path, punycode the host"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or unbalanced IPv6 brackets
        return "is not a valid URL"
    if parts.scheme.lower() not in ("ws", "wss"):
        return "must start with ws:// or wss://"
    if not parts.hostname:
        return "must name a host, like wss://staging.example.com/ws"
    if port == 0:
        return "must have a port from 1 to 65535"
    # RFC 6455 §3: a WebSocket URI has neither userinfo nor a fragment.
    if "@" in parts.netloc:
        return "must not carry user:password@; use headers or auth"
    if "#" in url:
        return "must not have a #fragment"
    if "{" in parts.netloc or "}" in parts.netloc:
        return "may hold {conn} in its path and query only, not in its host or port"
    return None


class TargetConfig(ConfigSection):
    """One WebSocket endpoint and what it is expected to say."""

    name: Name
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()
    handshake_timeout: PositiveDuration = 5.0
    close_timeout: PositiveDuration = 1.0
    welcome: WelcomeConfig | None = None
    echo: EchoConfig | None = None
    #: Ordered send/expect steps (issue 13); replaces welcome and echo (not both).
    conversation: tuple[StepConfig, ...] | None = Field(default=None, min_length=1)
    #: Rules answered on every connection from its upgrade on (while a step waits too).
    heartbeats: tuple[HeartbeatConfig, ...] = ()
    #: What a stable connection sends each stable.ping_interval (mode echo or message).
    keepalive: KeepaliveConfig | None = None
    max_message_bytes: int = Field(default=1_048_576, ge=125)
    auth: AuthConfig | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    compression: CompressionConfig | None = None
    version: VersionConfig | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # The message never repeats the URL: its query may carry a token.
        problem = _url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # Header values may be credentials, so messages name only the header.
        problems: Problems = []
        seen: dict[str, str] = {}
        for name, field_value in value.items():
            lowered = name.lower()
            at = path_key(name)
            if not _TOKEN.fullmatch(name):
                problems.append((at, "is not a valid header name"))
            elif lowered in _MANAGED_HEADERS:
                problems.append((at, _MANAGED_HEADERS[lowered]))
            elif lowered in seen:
                problems.append((at, f"repeats {seen[lowered]} (names ignore case)"))
            if not _FIELD_VALUE.fullmatch(field_value):
                problems.append((at, "value must be printable ASCII, without CR or LF"))
            seen.setdefault(lowered, name)
        if problems:
            raise invalid(problems)
        return value

    @field_validator("subprotocols")
    @classmethod
    def _check_subprotocols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems: Problems = []
        for index, subprotocol in enumerate(value):
            if not _TOKEN.fullmatch(subprotocol):
                problems.append((f"[{index}]", "is not a valid subprotocol name"))
            elif subprotocol in value[:index]:
                problems.append((f"[{index}]", f"repeats {subprotocol!r}"))
        if problems:
            raise invalid(problems)
        return value

    @model_validator(mode="after")
    def _check_target(self) -> Self:
        problems: Problems = []
        if not self.secure and self.tls != TlsConfig():
            problems.append(("tls", "applies only to wss:// urls"))
        if (
            self.auth is not None
            and self.auth.jwt.send_as_kind == "header"
            and any(name.lower() == "authorization" for name in self.headers)
        ):
            problems.append(("headers", "Authorization is set by auth.jwt (send_as: header)"))
        if self.conversation is not None:
            problems.extend(
                (name, "goes with the short form: set conversation, or welcome and echo")
                for name in ("welcome", "echo")
                if getattr(self, name) is not None
            )
        problems.extend(
            conversation_problems(self.conversation or (), self.heartbeats, self.keepalive)
        )
        steps = self.conversation or ()
        captured = (name for s in steps if s.expect is not None for name in s.expect.captures)
        if (version_problem := capture_problem(self.version, captured)) is not None:
            problems.append(("version.capture", version_problem))
        if problems:
            raise invalid(problems)
        return self

    @property
    def steps_bound(self) -> float:
        """Return the longest the steps after the upgrade may take (every expect's timeout)."""
        if self.conversation is None:
            welcome = self.welcome.timeout if self.welcome else 0.0
            return welcome + (self.echo.timeout if self.echo else 0.0)
        return sum(s.timeout * s.repeat for s in self.conversation if s.expect is not None)

    @property
    def secure(self) -> bool:
        """Return whether the target is wss://."""
        return urlsplit(self.url).scheme.lower() == "wss"

    @property
    def host(self) -> str:
        """Return the host to connect to, without IPv6 brackets."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """Return the port to connect to: from the url, else 443 for wss://, 80 for ws://."""
        return urlsplit(self.url).port or (443 if self.secure else 80)

    @property
    def resource(self) -> str:
        """Return the request target of the upgrade: path and query, ``/`` when empty."""
        parts = urlsplit(self.url)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path

    @property
    def host_header(self) -> str:
        """Return the Host header: the one configured in ``headers`` (a virtual host behind
        a proxy, say), else host and the port when it is not the default."""
        for name, value in self.headers.items():
            if name.lower() == "host":
                return value
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"
