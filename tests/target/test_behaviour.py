"""Knob validation of the reference target and runtime overrides."""

from __future__ import annotations

import pytest

from spikewatch.errors import SpikewatchError
from spikewatch.target.behaviour import (
    SUPPORTED_JWT_ALGORITHMS,
    InvalidKnobError,
    TargetBehaviour,
    with_knobs,
)

SECRET = "s" * 32


def test_defaults_are_a_healthy_echo_server() -> None:
    """The default knobs welcome, add no latency and never degrade."""
    behaviour = TargetBehaviour()
    assert behaviour.path == "/ws"
    assert behaviour.welcome is True
    assert behaviour.handshake_delay == 0
    assert behaviour.capacity is None
    assert behaviour.burst_threshold is None


@pytest.mark.parametrize(
    ("knobs", "knob"),
    [
        ({"path": "ws"}, "path"),
        ({"path": "/stats"}, "path"),
        ({"handshake_delay": -1}, "handshake_delay"),
        ({"recovery_delay": -0.1}, "recovery_delay"),
        ({"slow_delay": -2}, "slow_delay"),
        ({"burst_window": 0}, "burst_window"),
        ({"capacity": -1}, "capacity"),
        ({"burst_threshold": 0}, "burst_threshold"),
        ({"jwt_algorithms": ()}, "jwt_algorithms"),
        ({"jwt_algorithms": ("HS256", "none")}, "jwt_algorithms"),
        ({"jwt_key": "short"}, "jwt_key"),
        ({"jwt_key": "x" * 40, "jwt_algorithms": ("HS384",)}, "jwt_key"),
    ],
)
def test_out_of_range_knobs_are_refused(knobs: dict[str, object], knob: str) -> None:
    """Each knob's range is checked at construction and names the knob."""
    with pytest.raises(InvalidKnobError) as caught:
        TargetBehaviour(**knobs)  # type: ignore[arg-type]
    assert caught.value.knob == knob
    assert str(caught.value).startswith(f"{knob}: ")


def test_invalid_knob_error_is_a_spikewatch_and_value_error() -> None:
    """InvalidKnobError sits under the one exception root and under ValueError."""
    assert issubclass(InvalidKnobError, SpikewatchError)
    assert issubclass(InvalidKnobError, ValueError)
    assert str(InvalidKnobError("", "bad")) == "bad"


def test_pem_key_skips_the_hmac_length_check() -> None:
    """A PEM public key is not held to the HMAC secret length."""
    pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    assert TargetBehaviour(jwt_key=pem, jwt_algorithms=("RS256",)).jwt_key == pem


def test_with_knobs_replaces_only_the_given_knobs() -> None:
    """with_knobs returns a new behaviour with the overrides and every other knob kept."""
    base = TargetBehaviour(capacity=5)
    changed = with_knobs(
        base,
        {
            "handshake_delay": 1,
            "burst_threshold": 20,
            "recovery_delay": 30.5,
            "slow_delay": "250ms",
            "welcome": False,
            "jwt_key": SECRET * 2,
            "jwt_algorithms": ["HS256", "HS512"],
            "jwt_audience": None,
            "subprotocols": ["chat.v1"],
        },
    )
    assert changed.handshake_delay == 1.0
    assert isinstance(changed.handshake_delay, float)
    assert changed.burst_threshold == 20
    assert changed.recovery_delay == 30.5
    assert changed.slow_delay == 0.25
    assert changed.welcome is False
    assert changed.capacity == 5
    assert changed.jwt_algorithms == ("HS256", "HS512")
    assert changed.subprotocols == ("chat.v1",)
    assert base.handshake_delay == 0


def test_with_knobs_can_clear_optional_knobs() -> None:
    """Null clears capacity and burst_threshold."""
    changed = with_knobs(TargetBehaviour(capacity=3, burst_threshold=4), {"capacity": None})
    assert changed.capacity is None
    assert with_knobs(changed, {"burst_threshold": None}).burst_threshold is None


@pytest.mark.parametrize(
    ("overrides", "knob", "message"),
    [
        ({"colour": "red"}, "colour", "unknown knob"),
        ({"path": "/other"}, "path", "cannot change"),
        ({"welcome": 1}, "welcome", "true or false"),
        ({"handshake_delay": "soon"}, "handshake_delay", "expected a duration"),
        ({"handshake_delay": True}, "handshake_delay", "expected a duration"),
        ({"slow_delay": -1}, "slow_delay", "negative"),
        ({"capacity": 2.5}, "capacity", "integer or null"),
        ({"capacity": False}, "capacity", "integer or null"),
        ({"jwt_audience": 3}, "jwt_audience", "string or null"),
        ({"subprotocols": "chat"}, "subprotocols", "list of strings"),
        ({"jwt_algorithms": [1]}, "jwt_algorithms", "list of strings"),
        ({"burst_window": 0}, "burst_window", "> 0"),
    ],
)
def test_with_knobs_refuses_bad_overrides(
    overrides: dict[str, object], knob: str, message: str
) -> None:
    """An unknown knob, a value of the wrong type or out of range raises InvalidKnobError."""
    with pytest.raises(InvalidKnobError, match=message) as caught:
        with_knobs(TargetBehaviour(), overrides)
    assert caught.value.knob == knob


def test_public_knobs_mask_the_key_and_list_tuples() -> None:
    """public_knobs is JSON-ready and never shows the JWT key."""
    knobs = TargetBehaviour(jwt_key=SECRET, subprotocols=("a", "b")).public_knobs()
    assert knobs["jwt_key"] == "***"
    assert knobs["subprotocols"] == ["a", "b"]
    assert knobs["jwt_algorithms"] == ["HS256"]
    assert SECRET not in repr(knobs)
    assert TargetBehaviour().public_knobs()["jwt_key"] is None


def test_supported_algorithms_are_pyjwts() -> None:
    """The written-out list is exactly what PyJWT verifies (with cryptography), less ``none``."""
    from jwt.algorithms import get_default_algorithms  # noqa: PLC0415 - the module avoids it

    assert frozenset(get_default_algorithms()) - {"none"} == SUPPORTED_JWT_ALGORITHMS
