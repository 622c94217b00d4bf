"""The knobs of the reference target, and how runtime overrides are checked.

:class:`TargetBehaviour` is frozen: changing a knob at runtime (``POST /degrade``,
:meth:`RunningTarget.set_behaviour`) builds a new one with :func:`with_knobs`, which
checks every value's type and range before anything changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from spikewatch.config.durations import parse_duration
from spikewatch.errors import SpikewatchError

#: JWT algorithms the target can verify (PyJWT's with cryptography installed); ``none``
#: is never one of them. Written out rather than asked of PyJWT, whose import loads
#: cryptography; tests/target check that the two agree.
SUPPORTED_JWT_ALGORITHMS = frozenset(
    {
        *("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
        *("ES256", "ES256K", "ES384", "ES512", "ES521", "EdDSA"),
    }
)

#: Paths of the target's control endpoints, which the WebSocket path must not shadow.
CONTROL_PATHS = frozenset({"/healthz", "/stats", "/degrade", "/reset", "/version"})

#: The 101 answer's header that carries ``version`` (issue 17: a deploy's version).
VERSION_HEADER = "X-App-Version"

#: RFC 7518 §3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class InvalidKnobError(SpikewatchError, ValueError):
    """A knob override names an unknown knob or carries a value the knob cannot take."""

    def __init__(self, knob: str, message: str) -> None:
        self.knob = knob
        super().__init__(f"{knob}: {message}" if knob else message)


@dataclass(frozen=True, slots=True)
class TargetBehaviour:
    """How the reference target answers; the defaults make a fast, healthy echo server."""

    path: str = "/ws"
    welcome: bool = True
    handshake_delay: float = 0.0
    capacity: int | None = None
    burst_threshold: int | None = None
    burst_window: float = 1.0
    recovery_delay: float = 0.0
    slow_delay: float = 0.2
    drop_on_burst: bool = False
    jwt_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    subprotocols: tuple[str, ...] = ()
    #: The version the target reports, in the 101 answer's ``X-App-Version`` and at
    #: ``GET /version``; None reports none. Changed mid-way to stand for a deploy.
    version: str | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise InvalidKnobError("path", "must start with '/'")
        if self.path in CONTROL_PATHS:
            raise InvalidKnobError("path", "is taken by a control endpoint")
        for knob in ("handshake_delay", "recovery_delay", "slow_delay"):
            if getattr(self, knob) < 0:
                raise InvalidKnobError(knob, "must be ≥ 0")
        if self.burst_window <= 0:
            raise InvalidKnobError("burst_window", "must be > 0")
        if self.capacity is not None and self.capacity < 0:
            raise InvalidKnobError("capacity", "must be ≥ 0 or null")
        if self.burst_threshold is not None and self.burst_threshold < 1:
            raise InvalidKnobError("burst_threshold", "must be ≥ 1 or null")
        if not self.jwt_algorithms:
            raise InvalidKnobError("jwt_algorithms", "must name at least one algorithm")
        unknown = sorted(set(self.jwt_algorithms) - SUPPORTED_JWT_ALGORITHMS)
        if unknown:
            raise InvalidKnobError("jwt_algorithms", f"unsupported: {', '.join(unknown)}")
        self._check_hmac_key()

    def _check_hmac_key(self) -> None:
        if self.jwt_key is None or self.jwt_key.lstrip().startswith("-----BEGIN"):
            return
        size = len(self.jwt_key.encode())
        for algorithm in self.jwt_algorithms:
            needed = _HMAC_MIN_KEY_BYTES.get(algorithm, 0)
            if size < needed:
                raise InvalidKnobError(
                    "jwt_key",
                    f"an {algorithm} secret must be at least {needed} bytes (RFC 7518 §3.2)",
                )

    def public_knobs(self) -> dict[str, object]:
        """Return every knob as JSON-ready values, with the JWT key masked."""
        knobs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in knobs.items():
            if isinstance(value, tuple):
                knobs[name] = list(value)
        if self.jwt_key is not None:
            knobs["jwt_key"] = "***"
        return knobs


def _boolean(knob: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidKnobError(knob, "must be true or false")
    return value


def _seconds(knob: str, value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidKnobError(knob, str(exc)) from None


def _optional_count(knob: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidKnobError(knob, "must be an integer or null")
    return value


def _optional_text(knob: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InvalidKnobError(knob, "must be a string or null")


def _texts(knob: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidKnobError(knob, "must be a list of strings")
    return tuple(value)


#: Knobs that may change while the target runs, with the check for each value.
_LIVE_KNOBS: dict[str, Callable[[str, object], object]] = {
    "welcome": _boolean,
    "handshake_delay": _seconds,
    "capacity": _optional_count,
    "burst_threshold": _optional_count,
    "burst_window": _seconds,
    "recovery_delay": _seconds,
    "slow_delay": _seconds,
    "drop_on_burst": _boolean,
    "jwt_key": _optional_text,
    "jwt_algorithms": _texts,
    "jwt_audience": _optional_text,
    "subprotocols": _texts,
    "version": _optional_text,
}


def with_knobs(behaviour: TargetBehaviour, overrides: Mapping[str, object]) -> TargetBehaviour:
    """Return ``behaviour`` with ``overrides`` applied, or raise :class:`InvalidKnobError`.

    ``path`` cannot change at runtime: the route and every URL handed out depend on it.
    """
    checked: dict[str, object] = {}
    for knob, value in overrides.items():
        if knob == "path":
            raise InvalidKnobError(knob, "cannot change while the target runs")
        check = _LIVE_KNOBS.get(knob)
        if check is None:
            known = ", ".join(sorted(_LIVE_KNOBS))
            raise InvalidKnobError(knob, f"unknown knob (known: {known})")
        checked[knob] = check(knob, value)
    return dataclasses.replace(behaviour, **checked)  # type: ignore[arg-type]
