"""Tests for spikewatch.auth.jwt."""

from __future__ import annotations

import math
import re
from types import MappingProxyType
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from jwt.warnings import InsecureKeyLengthWarning

from spikewatch.auth.jwt import SendAsKind, TokenMinter, TokenPlacement, place_token
from spikewatch.errors import AuthError

SECRET = "s3cret-" * 10  # 70 bytes: long enough for HS512 (RFC 7518 §3.2)
CLAIMS = {"sub": "spikewatch-{conn}", "aud": "staging"}


def pem(key: PrivateKeyTypes, password: bytes | None = None) -> str:
    """Serialize a private key as PKCS#8 PEM, encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def public_pem(key: PrivateKeyTypes) -> str:
    """Serialize the public half of a private key as PEM."""
    public = cast(rsa.RSAPrivateKey, key).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """Return a 2048-bit RSA key, generated once for the module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(rsa_key: rsa.RSAPrivateKey) -> dict[str, PrivateKeyTypes]:
    """Return a signing key per asymmetric algorithm under test."""
    return {
        "RS256": rsa_key,
        "PS256": rsa_key,
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


class FakeClock:
    """A clock that returns a set time and counts how often it was read."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def unverified(token: str) -> dict[str, Any]:
    """Return a token's claims without checking anything."""
    return cast(dict[str, Any], jwt.decode(token, options={"verify_signature": False}))


# Signing


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_tokens_verify(algorithm: str) -> None:
    """HS256/384/512 tokens verify with the same secret and carry the claims."""
    minter = TokenMinter(algorithm=algorithm, key_material=SECRET, claims=CLAIMS, ttl=300)
    claims = jwt.decode(minter.mint(7), SECRET, algorithms=[algorithm], audience="staging")
    assert claims["sub"] == "spikewatch-7"
    assert claims["exp"] - claims["iat"] == 300


@pytest.mark.parametrize("algorithm", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_asymmetric_tokens_verify_with_public_key(
    algorithm: str, keys: dict[str, PrivateKeyTypes]
) -> None:
    """RS, PS, ES and EdDSA tokens verify with the public half of the key."""
    key = keys[algorithm]
    minter = TokenMinter(algorithm=algorithm, key_material=pem(key), claims=CLAIMS, ttl=60)
    token = minter.mint(3)
    claims = jwt.decode(token, public_pem(key), algorithms=[algorithm], audience="staging")
    assert claims["sub"] == "spikewatch-3"
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "typ": "JWT"}


def test_ed448_tokens_verify() -> None:
    """EdDSA also signs with an Ed448 key."""
    key = ed448.Ed448PrivateKey.generate()
    minter = TokenMinter(algorithm="EdDSA", key_material=pem(key), claims=CLAIMS, ttl=60)
    claims = jwt.decode(minter.mint(1), public_pem(key), algorithms=["EdDSA"], audience="staging")
    assert claims["sub"] == "spikewatch-1"


def test_token_is_what_pyjwt_encode_makes() -> None:
    """The token is byte for byte what jwt.encode gives for the same claims."""
    minter = TokenMinter(
        algorithm="HS256", key_material=SECRET, claims=CLAIMS, ttl=300, clock=lambda: 1000.0
    )
    expected = jwt.encode(
        {"sub": "spikewatch-5", "aud": "staging", "iat": 1000, "exp": 1300},
        SECRET,
        algorithm="HS256",
    )
    assert minter.mint(5) == expected


def test_wrong_key_fails_verification() -> None:
    """A token signed with one secret does not verify with another."""
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=CLAIMS, ttl=60)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(minter.mint(1), SECRET + "x", algorithms=["HS256"], audience="staging")


def test_wrong_public_key_fails_verification(keys: dict[str, PrivateKeyTypes]) -> None:
    """An ES256 token does not verify with another ES256 public key."""
    minter = TokenMinter(algorithm="ES256", key_material=pem(keys["ES256"]), claims=CLAIMS, ttl=60)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(minter.mint(1), public_pem(other), algorithms=["ES256"], audience="staging")


# Claims


def test_conn_is_substituted_at_every_depth() -> None:
    """{conn} is replaced in strings nested in dicts and lists; other values stay."""
    claims = {
        "sub": "spikewatch-{conn}",
        "ctx": {"ids": ["a-{conn}", 1, {"x": "{conn}{conn}"}], "static": "s", "n": None},
        "roles": ["reader"],
        "n": 5,
    }
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=claims, ttl=60)
    decoded = unverified(minter.mint(42))
    assert decoded["sub"] == "spikewatch-42"
    assert decoded["ctx"] == {"ids": ["a-42", 1, {"x": "4242"}], "static": "s", "n": None}
    assert decoded["roles"] == ["reader"]
    assert decoded["n"] == 5
    assert unverified(minter.mint(43))["ctx"]["ids"][2] == {"x": "4343"}


def test_substitution_is_plain_replace() -> None:
    """Only the literal {conn} is replaced; other braces are not a format string."""
    claims = {"a": "{conn}:{seq}:{{conn}}:%s:{0}", "b": "conn"}
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=claims, ttl=60)
    decoded = unverified(minter.mint(9))
    assert decoded["a"] == "9:{seq}:{9}:%s:{0}"
    assert decoded["b"] == "conn"


def test_claims_without_placeholder_are_sent_as_is() -> None:
    """A template without {conn} gives the same claims for every connection."""
    minter = TokenMinter(
        algorithm="HS256",
        key_material=SECRET,
        claims={"sub": "fixed", "aud": ["a", "b"]},
        ttl=60,
        clock=lambda: 50.0,
    )
    assert unverified(minter.mint(1)) == {"sub": "fixed", "aud": ["a", "b"], "iat": 50, "exp": 110}
    assert minter.mint(1) == minter.mint(2)


def test_mappings_and_tuples_become_objects_and_arrays() -> None:
    """Read-only mappings and tuples in the template are sent as JSON objects and arrays."""
    claims = MappingProxyType({"ctx": MappingProxyType({"ids": ("{conn}", 2)})})
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=claims, ttl=60)
    assert unverified(minter.mint(1))["ctx"] == {"ids": ["1", 2]}


def test_template_is_copied_at_construction() -> None:
    """Changing the claims after building the minter does not change its tokens."""
    claims: dict[str, Any] = {"sub": "u-{conn}", "ctx": {"ids": ["x"]}}
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=claims, ttl=60)
    claims["sub"] = "changed"
    claims["ctx"]["ids"].append("y")
    decoded = unverified(minter.mint(1))
    assert decoded["sub"] == "u-1"
    assert decoded["ctx"] == {"ids": ["x"]}


def test_minting_does_not_share_substituted_parts() -> None:
    """Each token is built afresh: one mint's substitutions do not leak into the next."""
    minter = TokenMinter(
        algorithm="HS256",
        key_material=SECRET,
        claims={"l": ["{conn}"], "d": {"k": "{conn}"}},
        ttl=60,
    )
    first, second = unverified(minter.mint(1)), unverified(minter.mint(2))
    assert (first["l"], first["d"]) == (["1"], {"k": "1"})
    assert (second["l"], second["d"]) == (["2"], {"k": "2"})


def test_iat_and_exp_come_from_the_clock() -> None:
    """iat is the clock in whole seconds and exp is iat plus the ttl rounded up."""
    clock = FakeClock(1000.9)
    minter = TokenMinter(
        algorithm="HS256", key_material=SECRET, claims=CLAIMS, ttl=299.2, clock=clock
    )
    assert clock.reads == 0
    decoded = unverified(minter.mint(1))
    assert (decoded["iat"], decoded["exp"]) == (1000, 1300)
    clock.now = 2000.0
    decoded = unverified(minter.mint(2))
    assert (decoded["iat"], decoded["exp"]) == (2000, 2300)
    assert clock.reads == 2


def test_explicit_exp_is_kept() -> None:
    """An exp set in the template is sent as is; iat still comes from the clock."""
    minter = TokenMinter(
        algorithm="HS256",
        key_material=SECRET,
        claims={"sub": "x", "exp": 4102444800},
        ttl=60,
        clock=lambda: 1000.0,
    )
    decoded = unverified(minter.mint(1))
    assert (decoded["iat"], decoded["exp"]) == (1000, 4102444800)


def test_explicit_iat_is_kept_and_exp_counts_from_now() -> None:
    """An iat set in the template is sent as is; exp is still the clock plus the ttl."""
    minter = TokenMinter(
        algorithm="HS256",
        key_material=SECRET,
        claims={"iat": 5},
        ttl=60,
        clock=lambda: 1000.0,
    )
    assert unverified(minter.mint(1)) == {"iat": 5, "exp": 1060}


# Problems are reported once, at construction, without the key


def assert_no_key_text(error: pytest.ExceptionInfo[AuthError], key_material: str) -> None:
    """Check that no line of the key appears in the error or its shown chain."""
    message = str(error.value)
    for line in key_material.strip().splitlines():
        if len(line) > 8:
            assert line not in message
    # No inner exception is shown, so that a logged traceback does not echo the key either.
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__


def test_malformed_pem_raises_auth_error_without_key_text(rsa_key: rsa.RSAPrivateKey) -> None:
    """A PEM with a corrupt body is an AuthError naming the algorithm, not the key."""
    lines = pem(rsa_key).splitlines()
    broken = "\n".join([lines[0], *(line[::-1] for line in lines[1:-1]), lines[-1]])
    with pytest.raises(
        AuthError,
        match="RS256: the PEM could not be loaded as the RSA private key that RS256 needs",
    ) as error:
        TokenMinter(algorithm="RS256", key_material=broken, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, broken)


@pytest.mark.parametrize(
    "algorithm", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K",
                  "ES384", "ES512", "ES521", "EdDSA"]
)  # fmt: skip
def test_every_asymmetric_algorithm_reports_a_garbage_pem(algorithm: str) -> None:
    """Every asymmetric algorithm turns a garbage PEM into an AuthError naming it."""
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(AuthError, match=f"JWT {algorithm}: ") as error:
        TokenMinter(algorithm=algorithm, key_material=garbage, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, garbage)


def test_key_of_wrong_family_is_rejected(keys: dict[str, PrivateKeyTypes]) -> None:
    """An EC key given for RS256 is an AuthError."""
    material = pem(keys["ES256"])
    with pytest.raises(AuthError, match=r"RS256.*RSA private key") as error:
        TokenMinter(algorithm="RS256", key_material=material, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, material)


def test_key_on_wrong_curve_is_rejected(keys: dict[str, PrivateKeyTypes]) -> None:
    """A P-384 key given for ES256 (which needs P-256, RFC 7518 §3.4) is an AuthError."""
    with pytest.raises(AuthError, match="EC private key on curve P-256 that ES256 needs"):
        TokenMinter(algorithm="ES256", key_material=pem(keys["ES384"]), claims=CLAIMS, ttl=60)


def test_public_key_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    """A public key cannot sign, and says so."""
    material = public_pem(rsa_key)
    with pytest.raises(AuthError, match="RS256: this is a public key") as error:
        TokenMinter(algorithm="RS256", key_material=material, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, material)


def test_encrypted_key_is_rejected(keys: dict[str, PrivateKeyTypes]) -> None:
    """A password-protected PEM is an AuthError asking for it unencrypted."""
    material = pem(keys["EdDSA"], password=b"pw")
    with pytest.raises(AuthError, match="EdDSA: the private key is encrypted") as error:
        TokenMinter(algorithm="EdDSA", key_material=material, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, material)


def test_non_pem_key_is_rejected() -> None:
    """A key that is not PEM at all is an AuthError that does not echo it."""
    material = "this-is-not-a-pem-key-material"
    with pytest.raises(AuthError, match="ES256: the private key is not PEM-encoded") as error:
        TokenMinter(algorithm="ES256", key_material=material, claims=CLAIMS, ttl=60)
    assert material not in str(error.value)


def test_pem_as_hmac_secret_is_rejected(rsa_key: rsa.RSAPrivateKey) -> None:
    """A PEM key given as an HS256 secret is refused (algorithm confusion)."""
    material = public_pem(rsa_key)
    with pytest.raises(AuthError, match="HS256: the secret looks like") as error:
        TokenMinter(algorithm="HS256", key_material=material, claims=CLAIMS, ttl=60)
    assert_no_key_text(error, material)


@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_empty_key_is_rejected(algorithm: str) -> None:
    """An empty key is an AuthError, for secrets and private keys alike."""
    with pytest.raises(AuthError, match=f"{algorithm}: the key is empty"):
        TokenMinter(algorithm=algorithm, key_material="", claims=CLAIMS, ttl=60)


@pytest.mark.parametrize(("algorithm", "message"), [("HS999", "unknown"), ("none", "unsigned")])
def test_unsupported_algorithm_is_rejected(algorithm: str, message: str) -> None:
    """Unknown algorithms and unsigned tokens are refused."""
    with pytest.raises(AuthError, match=message):
        TokenMinter(algorithm=algorithm, key_material=SECRET, claims=CLAIMS, ttl=60)


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan])
def test_bad_ttl_is_rejected(ttl: float) -> None:
    """The ttl must be a finite number of seconds above zero."""
    with pytest.raises(AuthError, match="ttl"):
        TokenMinter(algorithm="HS256", key_material=SECRET, claims=CLAIMS, ttl=ttl)


@pytest.mark.parametrize("value", [{1, 2}, math.nan])
def test_claims_that_are_not_json_are_rejected(value: object) -> None:
    """Claims JSON cannot carry (a set, NaN) fail at construction, not per connection."""
    with pytest.raises(AuthError, match="claims cannot be encoded as JSON"):
        TokenMinter(algorithm="HS256", key_material=SECRET, claims={"x": value}, ttl=60)


def test_key_too_small_to_sign_is_rejected() -> None:
    """A 1024-bit RSA key cannot make a PS512 signature: AuthError, after a length warning."""
    # A key too small to sign with is the point of this test.
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with (
        pytest.warns(InsecureKeyLengthWarning, match="PS512"),
        pytest.raises(AuthError, match="PS512: the key cannot sign"),
    ):
        TokenMinter(algorithm="PS512", key_material=pem(small), claims=CLAIMS, ttl=60)


def test_short_secret_warns_once_and_still_signs() -> None:
    """A short HMAC secret warns at construction, not on every mint, and still works."""
    with pytest.warns(InsecureKeyLengthWarning, match="HS256"):
        minter = TokenMinter(algorithm="HS256", key_material="short", claims=CLAIMS, ttl=60)
    # filterwarnings = error turns any warning from mint() into a failure here.
    assert unverified(minter.mint(1))["sub"] == "spikewatch-1"


# Placement


def test_header_placement() -> None:
    """header sends Authorization: Bearer <token>."""
    assert place_token("header", "t.o.k") == TokenPlacement(
        headers=(("Authorization", "Bearer t.o.k"),), query=(), subprotocols=()
    )


def test_query_placement() -> None:
    """query sends the token as the named query item."""
    assert place_token("query", "t.o.k", query_param="access_token") == TokenPlacement(
        headers=(), query=(("access_token", "t.o.k"),), subprotocols=()
    )


@pytest.mark.parametrize("param", [None, ""])
def test_query_placement_needs_a_name(param: str | None) -> None:
    """query without a parameter name is a caller bug."""
    with pytest.raises(ValueError, match="query_param"):
        place_token("query", "t.o.k", query_param=param)


def test_subprotocol_placement() -> None:
    """subprotocol offers the token itself as a subprotocol."""
    assert place_token("subprotocol", "t.o.k") == TokenPlacement(
        headers=(), query=(), subprotocols=("t.o.k",)
    )


def test_unknown_placement_is_rejected() -> None:
    """An unknown placement kind is a caller bug."""
    with pytest.raises(ValueError, match="unknown token placement"):
        place_token(cast(SendAsKind, "cookie"), "t.o.k")


def test_minted_tokens_are_valid_subprotocol_tokens() -> None:
    """A compact JWT only uses characters an RFC 6455 §4.1 subprotocol token may contain."""
    minter = TokenMinter(algorithm="HS256", key_material=SECRET, claims=CLAIMS, ttl=60)
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", minter.mint(123))
