"""Where the reference target finds a JWT, which subprotocol it selects, and verification."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.tokens import (
    find_token,
    looks_like_jwt,
    offered_subprotocols,
    select_subprotocol,
    token_is_valid,
)

SECRET = "reference-target-test-secret-0123456789"
TOKEN = jwt.encode({"sub": "t"}, SECRET, algorithm="HS256")


def test_looks_like_jwt() -> None:
    """Three base64url segments joined by dots look like a JWT; protocol names do not."""
    assert looks_like_jwt(TOKEN)
    assert looks_like_jwt("a.b.")
    assert not looks_like_jwt("chat.v1")
    assert not looks_like_jwt("a.b.c.d")
    assert not looks_like_jwt("a b.c.d")


def test_offered_subprotocols_splits_every_header() -> None:
    """Entries of every Sec-WebSocket-Protocol header are returned in order, trimmed."""
    assert offered_subprotocols(["chat.v1, chat.v2", " x ,", ""]) == ["chat.v1", "chat.v2", "x"]


@pytest.mark.parametrize(
    ("authorization", "query", "protocols", "expected"),
    [
        (f"Bearer {TOKEN}", None, [], TOKEN),
        (f"bearer  {TOKEN} ", None, [], TOKEN),
        (f"Bearer {TOKEN}", "q", ["a.b.c"], TOKEN),
        ("Basic dXNlcjpwdw==", "q", [], "q"),
        ("Bearer ", None, ["chat", "a.b.c"], "a.b.c"),
        (None, "", ["chat"], None),
        (None, None, [], None),
    ],
)
def test_find_token_prefers_header_then_query_then_subprotocol(
    authorization: str | None, query: str | None, protocols: list[str], expected: str | None
) -> None:
    """The Authorization header wins, then access_token, then a JWT-shaped subprotocol."""
    assert find_token(authorization, query, protocols) == expected


def test_select_subprotocol_never_selects_the_token() -> None:
    """The first offered accepted subprotocol is chosen, skipping the credential."""
    assert select_subprotocol(["a.b.c", "chat.v2", "chat.v1"], ["chat.v1", "chat.v2"], "a.b.c") == (
        "chat.v2"
    )
    assert select_subprotocol(["a.b.c"], ["a.b.c"], "a.b.c") is None
    assert select_subprotocol(["x"], [], None) is None


def test_token_is_valid_without_a_key() -> None:
    """With no JWT key configured every token (or none) passes."""
    assert token_is_valid("anything", TargetBehaviour())


def test_hs256_token_checks() -> None:
    """An HS256 token passes with the right secret and fails with a wrong one or garbage."""
    behaviour = TargetBehaviour(jwt_key=SECRET)
    assert token_is_valid(TOKEN, behaviour)
    assert not token_is_valid(TOKEN, TargetBehaviour(jwt_key="another-secret-of-32-bytes-or-more!"))
    assert not token_is_valid("a.b.c", behaviour)


def test_expired_token_fails() -> None:
    """A token whose exp has passed is refused."""
    expired = jwt.encode({"exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
    assert not token_is_valid(expired, TargetBehaviour(jwt_key=SECRET))


def test_audience_is_checked_only_when_configured() -> None:
    """jwt_audience requires a matching aud; without it, any aud is accepted."""
    token = jwt.encode({"aud": "staging"}, SECRET, algorithm="HS256")
    assert token_is_valid(token, TargetBehaviour(jwt_key=SECRET))
    assert token_is_valid(token, TargetBehaviour(jwt_key=SECRET, jwt_audience="staging"))
    assert not token_is_valid(token, TargetBehaviour(jwt_key=SECRET, jwt_audience="prod"))
    assert not token_is_valid(TOKEN, TargetBehaviour(jwt_key=SECRET, jwt_audience="staging"))


def test_public_key_tokens_and_algorithm_confusion() -> None:
    """An ES256 token verifies with the public key; an HS256 token forged with it does not."""
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    behaviour = TargetBehaviour(jwt_key=public_pem, jwt_algorithms=("ES256", "HS256"))
    assert token_is_valid(jwt.encode({"sub": "x"}, private, algorithm="ES256"), behaviour)
    forged = jwt.api_jws.PyJWS().encode(b'{"sub":"x"}', b"k" * 32, algorithm="HS256")
    assert not token_is_valid(forged, behaviour)
