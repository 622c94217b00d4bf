"""The ``auth`` section of a target: a fresh JWT per connection."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection
from spikewatch.config.problems import Problems, invalid
from spikewatch.errors import AuthError

__all__ = ["AuthConfig", "JwtAlgorithm", "JwtConfig", "is_pem_private_key"]

# RFC 3986 §2.3 unreserved characters: safe in a query parameter name without encoding.
_QUERY_PARAM = re.compile(r"[A-Za-z0-9._~-]+")

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


class JwtConfig(ConfigSection):
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
        problems: Problems = []
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
            raise invalid(problems)
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


class AuthConfig(ConfigSection):
    """Per-connection credentials."""

    jwt: JwtConfig
