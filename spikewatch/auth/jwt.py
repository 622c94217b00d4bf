"""Mint a fresh JWT per connection, and place it where the target reads it.

The key is loaded and checked once, when the :class:`TokenMinter` is built, so that a bad
key fails the config rather than every connection, and minting stays cheap during a
spike: it copies only the claims that contain ``{conn}``, serializes, and signs with the
already-parsed key through PyJWT's algorithm objects.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError
from jwt.utils import base64url_encode
from jwt.warnings import InsecureKeyLengthWarning

from spikewatch.errors import AuthError

#: Replaced by the connection number in every string value of the claims.
CONN_PLACEHOLDER = "{conn}"

SendAsKind = Literal["header", "query", "subprotocol"]

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_KEY_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "Ed25519 or Ed448"}
# RFC 7518 §3.4 and RFC 8812 §3.2 tie each ES algorithm to one curve.
_EC_CURVES = {
    "ES256": "P-256",
    "ES256K": "secp256k1",
    "ES384": "P-384",
    "ES512": "P-521",
    "ES521": "P-521",
}

# Builds one claim value for a connection number, given as a string.
_Build = Callable[[str], Any]


class TokenMinter:
    """Sign a fresh token per connection from a claims template.

    Every ``{conn}`` inside a string value of ``claims`` (at any depth of dicts and lists)
    becomes the connection number. ``iat`` is the clock's time in whole seconds and
    ``exp`` is ``iat + ceil(ttl)``, each unless the template sets it. Raise
    :class:`~spikewatch.errors.AuthError` for an unusable algorithm, key, claims or ttl;
    the message never contains the key. Warn once (``InsecureKeyLengthWarning``) when the
    key is shorter than recommended, since the key is the target's and not ours to pick.
    """

    __slots__ = (
        "_algorithm",
        "_build",
        "_clock",
        "_header",
        "_key",
        "_set_exp",
        "_set_iat",
        "_ttl",
    )

    def __init__(
        self,
        *,
        algorithm: str,
        key_material: str,
        claims: Mapping[str, Any],
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (ttl > 0 and math.isfinite(ttl)):
            raise AuthError(f"JWT ttl must be a finite number of seconds > 0, got {ttl}")
        self._algorithm = _algorithm_named(algorithm)
        self._key = _load_key(algorithm, self._algorithm, key_material)
        short = self._algorithm.check_key_length(self._key)
        if short:
            warnings.warn(f"JWT {algorithm}: {short}", InsecureKeyLengthWarning, stacklevel=2)
        header = {"alg": algorithm, "typ": "JWT"}
        self._header = base64url_encode(_to_json(header))
        template = _plain(claims)
        self._build: _Build = _compile(template) or (lambda _conn: dict(template))
        self._set_iat = "iat" not in template
        self._set_exp = "exp" not in template
        self._ttl = math.ceil(ttl)
        self._clock = clock
        # Sign once now so that claims that are not JSON, or a key that cannot sign with
        # this algorithm, fail here and not on every connection of a spike.
        try:
            payload = self._payload(0, 0)
        except (TypeError, ValueError) as exc:
            raise AuthError(f"JWT claims cannot be encoded as JSON: {exc}") from None
        try:
            self._sign(payload)
        except (TypeError, ValueError) as exc:
            raise AuthError(
                f"JWT {algorithm}: the key cannot sign with this algorithm ({type(exc).__name__})"
            ) from None

    def mint(self, conn: int) -> str:
        """Return a signed token for connection number ``conn``."""
        return self._sign(self._payload(conn, int(self._clock())))

    def _payload(self, conn: int, iat: int) -> bytes:
        claims = self._build(str(conn))
        if self._set_iat:
            claims["iat"] = iat
        if self._set_exp:
            claims["exp"] = iat + self._ttl
        return _to_json(claims)

    def _sign(self, payload: bytes) -> str:
        signing_input = self._header + b"." + base64url_encode(payload)
        signature = self._algorithm.sign(signing_input, self._key)
        return (signing_input + b"." + base64url_encode(signature)).decode("ascii")


def _algorithm_named(name: str) -> Algorithm:
    algorithms = get_default_algorithms()
    if name == "none":
        raise AuthError("JWT algorithm 'none' makes unsigned tokens; choose a signing algorithm")
    if name not in algorithms:
        known = ", ".join(sorted(n for n in algorithms if n != "none"))
        raise AuthError(f"unknown JWT algorithm {name!r}; choose one of {known}")
    return algorithms[name]


def _load_key(name: str, algorithm: Algorithm, key_material: str) -> Any:
    """Parse the key once; describe problems in our own words so no key text leaks."""
    if not key_material:
        raise AuthError(f"JWT {name}: the key is empty")
    if name in _HMAC_ALGORITHMS:
        try:
            return algorithm.prepare_key(key_material)
        except InvalidKeyError:
            # PyJWT refuses PEM, SSH, DER and JWK text as an HMAC secret (algorithm confusion).
            raise AuthError(
                f"JWT {name}: the secret looks like a public/private key or a JWK, "
                "but HS* algorithms need the shared secret itself"
            ) from None
    expected = f"{_KEY_FAMILIES[name[:2]]} private key"
    if name in _EC_CURVES:
        expected += f" on curve {_EC_CURVES[name]}"
    if "-----BEGIN" not in key_material:
        raise AuthError(
            f"JWT {name}: the private key is not PEM-encoded "
            "(expected a '-----BEGIN ... PRIVATE KEY-----' block)"
        )
    if "-----BEGIN ENCRYPTED" in key_material or "Proc-Type: 4,ENCRYPTED" in key_material:
        raise AuthError(f"JWT {name}: the private key is encrypted; give it unencrypted")
    try:
        key = algorithm.prepare_key(key_material)
    except (ValueError, TypeError, InvalidKeyError, UnsupportedAlgorithm) as exc:
        raise AuthError(
            f"JWT {name}: the PEM could not be loaded as the {expected} that {name} "
            f"needs ({type(exc).__name__})"
        ) from None
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise AuthError(f"JWT {name}: this is a public key; signing needs the private key")
    return key


def _plain(value: Any) -> Any:
    """Return a deep copy with mappings as dicts and tuples as lists, as JSON will see them."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _compile(value: Any) -> _Build | None:
    """Return a builder of ``value`` with ``{conn}`` substituted, or None when it has none.

    Parts without the placeholder are shared between tokens rather than copied: they are
    only ever serialized.
    """
    if isinstance(value, str):
        if CONN_PLACEHOLDER not in value:
            return None
        return lambda conn: value.replace(CONN_PLACEHOLDER, conn)
    if isinstance(value, dict):
        dict_builds = {k: b for k, item in value.items() if (b := _compile(item)) is not None}
        if not dict_builds:
            return None

        def build_dict(conn: str) -> dict[Any, Any]:
            built = dict(value)
            for key, build in dict_builds.items():
                built[key] = build(conn)
            return built

        return build_dict
    if isinstance(value, list):
        list_builds = [(i, b) for i, item in enumerate(value) if (b := _compile(item)) is not None]
        if not list_builds:
            return None

        def build_list(conn: str) -> list[Any]:
            built = list(value)
            for index, build in list_builds:
                built[index] = build(conn)
            return built

        return build_list
    return None


def _to_json(value: Any) -> bytes:
    # Compact, as PyJWT writes it; NaN and infinity are not JSON (RFC 8259 §6).
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class TokenPlacement:
    """Where a token goes in the upgrade request: extra headers, query items, subprotocols."""

    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]


def place_token(
    send_as_kind: SendAsKind, token: str, query_param: str | None = None
) -> TokenPlacement:
    """Place ``token`` as the target expects it.

    ``header``: ``Authorization: Bearer <token>`` (RFC 6750 §2.1). ``query``: the query
    item ``<query_param>=<token>`` (RFC 6750 §2.3), for browsers' WebSocket API which
    cannot set headers. ``subprotocol``: the token itself offered as a subprotocol, which
    the server reads from ``Sec-WebSocket-Protocol`` (RFC 6455 §4.1); a compact JWT uses
    only characters a subprotocol token allows. The caller adds these to its own.
    """
    if send_as_kind == "header":
        return TokenPlacement(
            headers=(("Authorization", f"Bearer {token}"),), query=(), subprotocols=()
        )
    if send_as_kind == "query":
        if not query_param:
            raise ValueError("sending the token as a query item needs a query_param name")
        return TokenPlacement(headers=(), query=((query_param, token),), subprotocols=())
    if send_as_kind == "subprotocol":
        return TokenPlacement(headers=(), query=(), subprotocols=(token,))
    raise ValueError(f"unknown token placement {send_as_kind!r}")
