"""The config as one frozen pydantic model, split the way the YAML file is.

Validation here is pure: it never touches the file system. Reading the files that the
config names (the API token, JWT keys, TLS files) is the loader's job, once the shape of
the config is known to be right.

The root, :class:`SpikewatchConfig`, is a pydantic-settings ``BaseSettings``: the loader
builds it from pydantic-settings sources (the environment over the YAML file), which it
hands in with :func:`settings_sources`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spikewatch.config.durations import Duration, PositiveDuration
from spikewatch.engine.eventloop import EventLoopChoice, uvloop_available
from spikewatch.engine.registry import PROBE_RESERVE
from spikewatch.errors import AuthError

__all__ = [
    "ENV_PREFIX",
    "PROBLEMS_ERROR_TYPE",
    "AbortConfig",
    "AuthConfig",
    "BaselineConfig",
    "EchoConfig",
    "JwtAlgorithm",
    "JwtConfig",
    "LimitsConfig",
    "LogConfig",
    "ProberConfig",
    "RampConfig",
    "RecoveryConfig",
    "ScenarioConfig",
    "ScheduleConfig",
    "ServerConfig",
    "SpikeConfig",
    "SpikewatchConfig",
    "StableConfig",
    "TargetConfig",
    "ThresholdsConfig",
    "TlsConfig",
    "WelcomeConfig",
    "is_pem_private_key",
    "path_key",
    "settings_sources",
]

#: Starts the name of every environment variable that overrides the config.
ENV_PREFIX: Final = "SPIKEWATCH_"

#: The pydantic error type a model raises for rules that span fields. Its context holds
#: ``problems``: pairs of (path relative to the model, message), one per problem.
PROBLEMS_ERROR_TYPE: Final = "spikewatch_problems"

_Problems = list[tuple[str, str]]


def path_key(key: str | int) -> str:
    """Return ``key`` as a path segment: ``.name``, ``[0]``, or ``["odd key"]``."""
    if isinstance(key, int):
        return f"[{key}]"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f".{key}"
    # JSON quoting escapes control characters, so a path never garbles a terminal.
    return f"[{json.dumps(key)}]"


def _invalid(problems: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """Return one pydantic error that carries several problems, each at its own path."""
    detail = "; ".join(f"{path}: {message}" if path else message for path, message in problems)
    return PydanticCustomError(
        PROBLEMS_ERROR_TYPE, "{detail}", {"detail": detail, "problems": tuple(problems)}
    )


class _ConfigModel(BaseModel):
    # hide_input_in_errors: str(ValidationError) would otherwise echo the input, secrets
    # included, to whoever prints it.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


# --- small value types ----------------------------------------------------------------

_NAME = re.compile(r"[a-z0-9_-]+")
# RFC 9110 §5.6.2: header names, subprotocols (RFC 6455 §4.1) are tokens.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5 allows visible ASCII, space and tab in a field value; CR/LF would let a
# value smuggle in another header.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
# RFC 3986 §2.3 unreserved characters: safe in a query parameter name without encoding.
_QUERY_PARAM = re.compile(r"[A-Za-z0-9._~-]+")


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must use only a-z, 0-9, _ and - (it becomes a metric label)")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None


Name = Annotated[str, AfterValidator(_check_name)]
Ratio = Annotated[float, Field(ge=0, le=1)]


# --- server, limits, prober, log --------------------------------------------------------

#: More worker processes than this would only contend for the same cores.
MAX_WORKERS: Final = 64


def _split_host_port(listen: str) -> tuple[str, int]:
    usage = "must be host:port, like 0.0.0.0:9878 or [::1]:9878"
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or any(c.isspace() for c in host):
        raise ValueError(usage)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(usage)
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{usage}; [{host}] is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{usage}; put an IPv6 address in brackets")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ValueError(f"{usage}, with a port from 0 to 65535")
    return host, int(port_text)


class ServerConfig(_ConfigModel):
    """The HTTP server: metrics, health, API."""

    listen: str = "0.0.0.0:9878"
    api_token_file: Path | None = None
    #: After loading, holds the contents of ``api_token_file`` when that is set.
    api_token: SecretStr | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_token(self) -> Self:
        problems: _Problems = []
        if self.api_token is not None:
            if self.api_token_file is not None:
                problems.append(("api_token", "set api_token or api_token_file, not both"))
            elif not self.api_token.get_secret_value().strip():
                problems.append(("api_token", "must not be empty"))
        if problems:
            raise _invalid(problems)
        return self

    @property
    def host(self) -> str:
        """Return the address to listen on, without IPv6 brackets."""
        return _split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """Return the port to listen on (0: any free port)."""
        return _split_host_port(self.listen)[1]


class LimitsConfig(_ConfigModel):
    """Safety limits over all runs together."""

    max_connections: int = Field(default=2000, ge=1)
    max_concurrent_runs: int = Field(default=1, ge=1)


class ProberConfig(_ConfigModel):
    """The prober's own limits: past them a run is ``invalid``, not the target's fault."""

    max_loop_lag_p99: PositiveDuration = 0.1
    max_start_lateness_p99: PositiveDuration = 0.25
    #: Percent of one core.
    max_cpu_percent: float = Field(default=95.0, gt=0)
    lag_sample_interval: PositiveDuration = 0.02
    #: The daemon's loop-lag sampling between runs (``lag_sample_interval`` during them):
    #: each sample wakes the process, and 50 wake-ups a second were most of its idle CPU.
    idle_lag_sample_interval: PositiveDuration = 0.25
    #: Processes a spike is spread over: 1 fires it from the daemon's own event loop;
    #: N > 1 starts N worker processes that each fire a round-robin share of it, so that
    #: a spike can use N cores (baseline, stable, recovery and the verdict stay here).
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    #: The event loop: ``auto`` is uvloop when installed (the default install has it),
    #: else asyncio's; ``uvloop`` refuses to start without it. Read at start only.
    event_loop: Annotated[EventLoopChoice, BeforeValidator(_lower)] = "auto"

    @field_validator("event_loop")
    @classmethod
    def _loop_available(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop" and not uvloop_available():
            raise PydanticCustomError(
                "uvloop_missing", "uvloop is not installed here; install it or choose asyncio"
            )
        return value

    @model_validator(mode="after")
    def _check_idle_interval(self) -> Self:
        if self.idle_lag_sample_interval < self.lag_sample_interval:
            raise _invalid(
                [
                    (
                        "idle_lag_sample_interval",
                        f"must be ≥ lag_sample_interval ({self.lag_sample_interval:g}s)",
                    )
                ]
            )
        return self


class LogConfig(_ConfigModel):
    """Log output."""

    format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"


class ShardingConfig(_ConfigModel):
    """Scale-out: N replicas each fire 1/N of every spike at the same instant.

    See deploy/README.md for the model and its limits.
    """

    replicas: int = Field(default=1, ge=1)
    #: This replica, 0 ≤ index < replicas. Unset: the ordinal that ends $HOSTNAME
    #: (a StatefulSet's ``spikewatch-3`` is 3).
    index: int | None = Field(default=None, ge=0)
    #: How long after the scheduled instant every replica's spike starts. Unset: the
    #: scenario's baseline time plus 2 s (3 s with stable connections).
    spike_delay: PositiveDuration | None = None

    @model_validator(mode="after")
    def _check_index(self) -> Self:
        if self.index is not None and self.index >= self.replicas:
            raise _invalid([("index", f"must be less than replicas ({self.replicas})")])
        return self

    @property
    def enabled(self) -> bool:
        """Whether spikes are shared between several replicas."""
        return self.replicas > 1


# --- targets ---------------------------------------------------------------------------


class WelcomeConfig(_ConfigModel):
    """The message a target sends first after the upgrade."""

    match: str
    timeout: PositiveDuration = 2.0

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: str) -> str:
        _compile(value)
        return value

    @property
    def pattern(self) -> re.Pattern[str]:
        """Return ``match`` compiled."""
        return re.compile(self.match)


def _fill(template: str, seq: int, conn: int) -> str:
    # Plain replacement, not str.format: payloads are often JSON, full of braces.
    return template.replace("{seq}", str(seq)).replace("{conn}", str(conn))


class EchoConfig(_ConfigModel):
    """One message sent after the welcome, and what its answer must match."""

    #: ``{seq}`` and ``{conn}`` are replaced by the message and connection numbers.
    payload: str = Field(min_length=1)
    #: A regex; may use ``{seq}`` and ``{conn}`` too.
    match: str
    timeout: PositiveDuration = 2.0

    @field_validator("match")
    @classmethod
    def _check_match(cls, value: str) -> str:
        _compile(_fill(value, 0, 0))
        return value

    def payload_for(self, seq: int, conn: int) -> str:
        """Return the payload to send as message ``seq`` on connection ``conn``."""
        return _fill(self.payload, seq, conn)

    def pattern_for(self, seq: int, conn: int) -> re.Pattern[str]:
        """Return the regex the answer to message ``seq`` on connection ``conn`` must match."""
        # Numbers are plain digits, so they need no escaping inside the regex.
        return re.compile(_fill(self.match, seq, conn))


JwtAlgorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
]

# The token's lifetime comes from ttl; a fixed iat or exp would go stale.
_TTL_CLAIMS: Final = ("iat", "exp")


def is_pem_private_key(text: str) -> bool:
    """Return whether ``text`` looks like a PEM private key (a cheap check, not a parse)."""
    return "-----BEGIN" in text and "PRIVATE KEY-----" in text


class JwtConfig(_ConfigModel):
    """A fresh JWT per connection."""

    algorithm: JwtAlgorithm = "HS256"
    secret_file: Path | None = None
    #: After loading, holds the contents of ``secret_file`` when that is set.
    secret: SecretStr | None = None
    private_key_file: Path | None = None
    #: After loading, holds the contents of ``private_key_file`` when that is set.
    private_key: SecretStr | None = None
    claims: dict[str, Any] = Field(default_factory=dict)
    ttl: PositiveDuration = 300.0
    #: ``header`` (Authorization: Bearer), ``subprotocol``, or ``query:<param>``.
    send_as: str = "header"

    @field_validator("claims")
    @classmethod
    def _check_claims(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = [name for name in _TTL_CLAIMS if name in value]
        if fixed:
            raise ValueError(f"{' and '.join(fixed)} are set from ttl; remove them from claims")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            # YAML turns 2024-01-01 into a date, which a JWT cannot carry.
            raise ValueError(
                "must hold only JSON values: strings, numbers, booleans, null, lists, mappings"
            ) from None
        return value

    @field_validator("send_as")
    @classmethod
    def _check_send_as(cls, value: str) -> str:
        if value in ("header", "subprotocol"):
            return value
        kind, sep, param = value.partition(":")
        if kind == "query" and sep and _QUERY_PARAM.fullmatch(param):
            return value
        raise ValueError(
            "must be header, subprotocol or query:<param>"
            " (param made of letters, digits and . _ ~ -)"
        )

    @model_validator(mode="after")
    def _check_key(self) -> Self:
        if self.uses_secret:
            wanted, unwanted = ("secret", "secret_file"), ("private_key", "private_key_file")
            others = "RS*, PS*, ES* and EdDSA"
        else:
            wanted, unwanted = ("private_key", "private_key_file"), ("secret", "secret_file")
            others = "HS*"
        problems: _Problems = []
        inline, from_file = (getattr(self, name) is not None for name in wanted)
        if inline and from_file:
            problems.append((wanted[0], f"set {wanted[0]} or {wanted[1]}, not both"))
        elif not (inline or from_file):
            problems.append(("", f"{self.algorithm} needs {wanted[0]} or {wanted[1]}"))
        problems.extend(
            (name, f"is for {others}; {self.algorithm} signs with {wanted[0]} or {wanted[1]}")
            for name in unwanted
            if getattr(self, name) is not None
        )
        if self.secret is not None and not self.secret.get_secret_value():
            problems.append(("secret", "must not be empty"))
        if (
            self.private_key is not None
            and not self.uses_secret
            and not is_pem_private_key(self.private_key.get_secret_value())
        ):
            problems.append(("private_key", "is not a PEM private key"))
        if problems:
            raise _invalid(problems)
        return self

    @property
    def uses_secret(self) -> bool:
        """Return whether the algorithm signs with a shared secret (HS*), not a private key."""
        return self.algorithm.startswith("HS")

    @property
    def send_as_kind(self) -> Literal["header", "query", "subprotocol"]:
        """Return where the token goes: a header, a query parameter or a subprotocol."""
        if self.send_as == "header":
            return "header"
        if self.send_as == "subprotocol":
            return "subprotocol"
        return "query"

    @property
    def query_param(self) -> str | None:
        """Return the query parameter that carries the token, or None."""
        return self.send_as.partition(":")[2] if self.send_as_kind == "query" else None

    def key_material(self) -> str:
        """Return the secret (HS*) or the PEM private key (others).

        Raise :class:`AuthError` when the key lives in a file that was not read, which
        happens only for a model built without :func:`spikewatch.config.load_config`.
        """
        value = self.secret if self.uses_secret else self.private_key
        if value is None:
            field = "secret_file" if self.uses_secret else "private_key_file"
            raise AuthError(f"{field} was not read; load the config with load_config()")
        return value.get_secret_value()


class AuthConfig(_ConfigModel):
    """Per-connection credentials."""

    jwt: JwtConfig


class TlsConfig(_ConfigModel):
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
            raise _invalid([("key_file", "needs cert_file")])
        return self

    @property
    def files(self) -> dict[str, Path]:
        """Return the files that are set, by field name."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {name: path for name, path in named.items() if path is not None}


# Set by the handshake itself (RFC 6455 §4.1) or meaningless on a GET without a body.
_MANAGED_HEADERS: Final = {
    "host": "is derived from url",
    "sec-websocket-protocol": "is derived from subprotocols",
    "upgrade": "is set by the WebSocket handshake",
    "connection": "is set by the WebSocket handshake",
    "sec-websocket-key": "is set by the WebSocket handshake",
    "sec-websocket-version": "is set by the WebSocket handshake",
    "sec-websocket-extensions": "is not supported: spikewatch negotiates no extensions",
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
    return None


class TargetConfig(_ConfigModel):
    """One WebSocket endpoint and what it is expected to say."""

    name: Name
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    subprotocols: tuple[str, ...] = ()
    handshake_timeout: PositiveDuration = 5.0
    close_timeout: PositiveDuration = 1.0
    welcome: WelcomeConfig | None = None
    echo: EchoConfig | None = None
    max_message_bytes: int = Field(default=1_048_576, ge=125)
    auth: AuthConfig | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)

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
        problems: _Problems = []
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
            raise _invalid(problems)
        return value

    @field_validator("subprotocols")
    @classmethod
    def _check_subprotocols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        problems: _Problems = []
        for index, subprotocol in enumerate(value):
            if not _TOKEN.fullmatch(subprotocol):
                problems.append((f"[{index}]", "is not a valid subprotocol name"))
            elif subprotocol in value[:index]:
                problems.append((f"[{index}]", f"repeats {subprotocol!r}"))
        if problems:
            raise _invalid(problems)
        return value

    @model_validator(mode="after")
    def _check_target(self) -> Self:
        problems: _Problems = []
        if not self.secure and self.tls != TlsConfig():
            problems.append(("tls", "applies only to wss:// urls"))
        if (
            self.auth is not None
            and self.auth.jwt.send_as_kind == "header"
            and any(name.lower() == "authorization" for name in self.headers)
        ):
            problems.append(("headers", "Authorization is set by auth.jwt (send_as: header)"))
        if problems:
            raise _invalid(problems)
        return self

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
        """Return the Host header: host, and the port when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


# --- scenarios -------------------------------------------------------------------------

DEFAULT_EVERY: Final = 15 * 60.0


class ScheduleConfig(_ConfigModel):
    """When a scenario runs: every so often, or on a cron schedule."""

    every: PositiveDuration | None = None
    #: Each run starts up to this much later than due, at random.
    jitter: Duration = 0.0
    cron: str | None = None
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _default_every(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("every") is None and data.get("cron") is None:
            return {**data, "every": DEFAULT_EVERY}
        return data

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"is not a valid cron expression: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("is not a known time zone, like UTC or Europe/Paris") from None
        return value

    @model_validator(mode="after")
    def _check_choice(self) -> Self:
        if self.every is not None and self.cron is not None:
            raise _invalid([("", "set every or cron, not both")])
        if self.every is not None and self.jitter >= self.every:
            raise _invalid([("jitter", "must be less than every")])
        return self

    @property
    def tzinfo(self) -> ZoneInfo:
        """Return the time zone that cron expressions are read in."""
        return ZoneInfo(self.timezone)


class SpikeConfig(_ConfigModel):
    """Open ``connections`` in ``batches``, each batch at once, ``batch_interval`` apart."""

    connections: int = Field(ge=1)
    batches: int = Field(default=1, ge=1)
    batch_interval: Duration = 0.0

    @model_validator(mode="after")
    def _check_batches(self) -> Self:
        if self.batches > self.connections:
            raise _invalid([("batches", f"must be ≤ connections ({self.connections})")])
        return self

    @property
    def total_connections(self) -> int:
        """Return how many spike connections open in all."""
        return self.connections


class RampConfig(_ConfigModel):
    """Open ``steps[i]`` connections per step, ``step_interval`` apart."""

    steps: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)
    step_interval: Duration

    @property
    def total_connections(self) -> int:
        """Return how many ramp connections open in all."""
        return sum(self.steps)


class StableConfig(_ConfigModel):
    """Connections opened before the spike and kept busy through it."""

    connections: int = Field(ge=1)
    ping_interval: PositiveDuration = 1.0
    #: auto: echo when the target has one, else a WebSocket ping.
    mode: Literal["auto", "ping", "echo"] = "auto"
    #: How long a ping or echo may go unanswered before the connection counts as lost.
    timeout: PositiveDuration = 5.0


class BaselineConfig(_ConfigModel):
    """Probes before the spike; their median latency is B."""

    probes: int = Field(default=5, ge=1)
    interval: Duration = 0.5


class RecoveryConfig(_ConfigModel):
    """Probing after the spike, and what counts as recovered."""

    probe_interval: PositiveDuration = 0.5
    consecutive: int = Field(default=3, ge=1)
    tolerance: float = Field(default=0.2, ge=0)
    slack: Duration = 0.005
    timeout: PositiveDuration = 120.0


class ThresholdsConfig(_ConfigModel):
    """Limits a run must meet to pass; None: not checked."""

    success_ratio: Ratio | None = None
    handshake_p95: Duration | None = None
    first_message_p95: Duration | None = None
    message_rtt_p95: Duration | None = None
    recovery: Duration | None = None
    dropped_stable: Annotated[int, Field(ge=0)] | None = None


class AbortConfig(_ConfigModel):
    """When to stop opening spike connections."""

    #: Stop once this share of finished attempts failed; None: never.
    error_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    #: Judge the failures only after this many attempts finished.
    min_attempts: int = Field(default=10, ge=1)


class ScenarioConfig(_ConfigModel):
    """A shape of load and the rules to judge it."""

    name: Name
    #: None: every target.
    targets: Annotated[tuple[Name, ...], Field(min_length=1)] | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    spike: SpikeConfig | None = None
    ramp: RampConfig | None = None
    hold: Duration = 0.0
    stable: StableConfig | None = None
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    abort: AbortConfig = Field(default_factory=AbortConfig)
    #: The whole run's deadline; None: the engine computes one.
    timeout: PositiveDuration | None = None

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            repeated = [(f"[{i}]", f"repeats {n!r}") for i, n in enumerate(value) if n in value[:i]]
            if repeated:
                raise _invalid(repeated)
        return value

    @model_validator(mode="after")
    def _check_scenario(self) -> Self:
        problems: _Problems = []
        if self.spike is not None and self.ramp is not None:
            problems.append(("", "set spike or ramp, not both"))
        elif self.spike is None and self.ramp is None:
            problems.append(("", "needs spike or ramp"))
        if self.thresholds.dropped_stable is not None and self.stable is None:
            problems.append(("thresholds.dropped_stable", "needs stable connections"))
        if problems:
            raise _invalid(problems)
        return self

    @property
    def load(self) -> SpikeConfig | RampConfig:
        """Return the spike or the ramp, whichever is set."""
        if self.spike is not None:
            return self.spike
        assert self.ramp is not None  # the validator guarantees one of them
        return self.ramp

    @property
    def total_connections(self) -> int:
        """Return how many connections a run holds open at its peak: spike or ramp, and stable."""
        stable = self.stable.connections if self.stable is not None else 0
        return self.load.total_connections + stable


# --- the root --------------------------------------------------------------------------


# The sources below the init kwargs, highest priority first, while the loader builds a config.
_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar(
    "spikewatch_config_sources", default=()
)


@contextmanager
def settings_sources(*sources: PydanticBaseSettingsSource) -> Iterator[None]:
    """Make ``SpikewatchConfig()`` read ``sources`` (highest priority first) within the block."""
    token = _SOURCES.set(sources)
    try:
        yield
    finally:
        _SOURCES.reset(token)


class SpikewatchConfig(BaseSettings):
    """The whole config."""

    model_config = SettingsConfigDict(
        # What the loader's environment source reads: SPIKEWATCH_LIMITS__MAX_CONNECTIONS.
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # For the init kwargs: pydantic-settings would otherwise take Limits= for limits=,
        # where the model has always said "unknown field". Environment names still match
        # in any case: the loader's environment source does its own matching.
        case_sensitive=True,
        # As for every other section (see _ConfigModel).
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    prober: ProberConfig = Field(default_factory=ProberConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    targets: tuple[TargetConfig, ...] = Field(min_length=1)
    scenarios: tuple[ScenarioConfig, ...] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Return the init kwargs, then the sources the loader handed in with settings_sources.

        For :func:`~spikewatch.config.load_config` these are its environment source, then its
        YAML file source; pydantic-settings' own environment source is left out, as it cannot
        index lists (see :class:`spikewatch.config.loader.EnvironmentSource`). Outside the
        loader there are none: ``SpikewatchConfig(...)`` and ``model_validate`` (which
        pydantic routes through ``BaseSettings.__init__``) see their arguments only, never
        the process environment.
        """
        return (init_settings, *_SOURCES.get())

    @classmethod
    def _settings_log_debug(cls, states: dict[str, dict[str, Any]]) -> None:
        """Log which sections each source set, without their values.

        pydantic-settings calls this when ``PYDANTIC_SETTINGS_DEBUG`` is set, and its own
        version logs each source's values: secrets from the file and the environment too.
        """
        lines = [f"Resolving settings for {cls.__name__!r} (sections per source, highest first):"]
        lines.extend(
            f"  {name}: {', '.join(map(repr, state)) or '-'}" for name, state in states.items()
        )
        logging.getLogger("pydantic_settings").debug("\n".join(lines))

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        problems: _Problems = []
        problems.extend(_duplicates("targets", [t.name for t in self.targets], "target"))
        problems.extend(_duplicates("scenarios", [s.name for s in self.scenarios], "scenario"))
        known = {t.name for t in self.targets}
        for i, scenario in enumerate(self.scenarios):
            at = f"scenarios[{i}]"
            unknown = [(k, n) for k, n in enumerate(scenario.targets or ()) if n not in known]
            problems.extend((f"{at}.targets[{k}]", f"unknown target {n!r}") for k, n in unknown)
            if unknown:
                continue  # the checks below need every target to exist
            if scenario.total_connections + PROBE_RESERVE > self.limits.max_connections:
                problems.append(
                    (
                        at,
                        f"opens {scenario.total_connections} connections at its peak; with"
                        f" {PROBE_RESERVE} kept for its probes that is more than"
                        f" limits.max_connections ({self.limits.max_connections})",
                    )
                )
            spike_total = scenario.load.total_connections
            if self.sharding.enabled and spike_total < self.sharding.replicas:
                problems.append(
                    (
                        at,
                        f"spikes {spike_total} connections, fewer than"
                        f" sharding.replicas ({self.sharding.replicas}): some replicas"
                        " would have no share",
                    )
                )
            if self.sharding.enabled and scenario.schedule.jitter:
                problems.append(
                    (
                        f"{at}.schedule.jitter",
                        "must be 0 with sharding: every replica fires at the same instant",
                    )
                )
            if scenario.stable is not None and scenario.stable.mode == "echo":
                no_echo = [t.name for t in self.targets_of(scenario) if t.echo is None]
                if no_echo:
                    names = ", ".join(repr(n) for n in no_echo)
                    problems.append((f"{at}.stable.mode", f"echo needs echo on target {names}"))
        if problems:
            raise _invalid(problems)
        return self

    def target(self, name: str) -> TargetConfig:
        """Return the target called ``name``; raise KeyError if there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def scenario(self, name: str) -> ScenarioConfig:
        """Return the scenario called ``name``; raise KeyError if there is none."""
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        raise KeyError(name)

    def targets_of(self, scenario: ScenarioConfig) -> tuple[TargetConfig, ...]:
        """Return the targets ``scenario`` runs against, in the order it lists them."""
        if scenario.targets is None:
            return self.targets
        return tuple(self.target(name) for name in scenario.targets)

    def pairs(self) -> list[tuple[TargetConfig, ScenarioConfig]]:
        """Return every (target, scenario) pair that runs, scenario by scenario."""
        return [(t, s) for s in self.scenarios for t in self.targets_of(s)]


def _duplicates(section: str, names: list[str], kind: str) -> _Problems:
    first: dict[str, int] = {}
    problems: _Problems = []
    for index, name in enumerate(names):
        if name in first:
            problems.append(
                (
                    f"{section}[{index}].name",
                    f"another {kind} is called {name!r} ({section}[{first[name]}])",
                )
            )
        else:
            first[name] = index
    return problems
