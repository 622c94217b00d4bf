"""Where the reference target finds a client's JWT, and how it checks it.

A token may come as ``Authorization: Bearer <jwt>`` (RFC 6750 §2.1), as the query
parameter ``access_token`` (RFC 6750 §2.3), or as a ``Sec-WebSocket-Protocol`` entry
shaped like a JWT (browsers cannot set headers on a WebSocket upgrade). A token offered
as a subprotocol is a credential, never a protocol the server may select.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from spikewatch.target.behaviour import TargetBehaviour

#: Three base64url segments joined by dots: a JWS compact serialization (RFC 7515 §7.1).
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

#: The query parameter of RFC 6750 §2.3.
QUERY_PARAMETER = "access_token"


def looks_like_jwt(value: str) -> bool:
    """Return whether ``value`` has the shape of a compact JWT."""
    return _JWT_SHAPE.fullmatch(value) is not None


def offered_subprotocols(header_values: Iterable[str]) -> list[str]:
    """Split every ``Sec-WebSocket-Protocol`` header into its entries, in offer order."""
    return [entry.strip() for value in header_values for entry in value.split(",") if entry.strip()]


def find_token(
    authorization: str | None, query_token: str | None, subprotocols: Sequence[str]
) -> str | None:
    """Return the token the client offered: header first, then query, then subprotocol."""
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        # Auth schemes are case-insensitive (RFC 9110 §11.1).
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if query_token:
        return query_token
    for entry in subprotocols:
        if looks_like_jwt(entry):
            return entry
    return None


def select_subprotocol(
    offered: Sequence[str], accepted: Sequence[str], token: str | None
) -> str | None:
    """Return the first offered subprotocol the server accepts, never the token itself."""
    for entry in offered:
        if entry != token and entry in accepted:
            return entry
    return None


def token_is_valid(token: str, behaviour: TargetBehaviour) -> bool:
    """Return whether ``token`` is signed with the target's key and meant for it."""
    if behaviour.jwt_key is None:
        return True
    import jwt  # noqa: PLC0415 - PyJWT loads cryptography (~9 MB RSS): only when JWTs are in use

    try:
        jwt.decode(
            token,
            behaviour.jwt_key,
            algorithms=list(behaviour.jwt_algorithms),
            audience=behaviour.jwt_audience,
            options={"verify_aud": behaviour.jwt_audience is not None},
        )
    except jwt.PyJWTError:
        return False
    return True
