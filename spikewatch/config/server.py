"""The ``server`` and ``log`` sections: the daemon's HTTP server and its log output."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, SecretStr, field_validator, model_validator

from spikewatch.config.fields import ConfigSection, lower_text
from spikewatch.config.problems import Problems, invalid

__all__ = ["LogConfig", "ServerConfig"]


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


class ServerConfig(ConfigSection):
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
        problems: Problems = []
        if self.api_token is not None:
            if self.api_token_file is not None:
                problems.append(("api_token", "set api_token or api_token_file, not both"))
            elif not self.api_token.get_secret_value().strip():
                problems.append(("api_token", "must not be empty"))
        if problems:
            raise invalid(problems)
        return self

    @property
    def host(self) -> str:
        """Return the address to listen on, without IPv6 brackets."""
        return _split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """Return the port to listen on (0: any free port)."""
        return _split_host_port(self.listen)[1]


class LogConfig(ConfigSection):
    """Log output."""

    format: Annotated[Literal["text", "json"], BeforeValidator(lower_text)] = "text"
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(lower_text)] = (
        "info"
    )
