"""What the daemon and its worker processes say to each other, as bytes.

Every message is one JSON object behind a 4-byte big-endian length, over the worker's
stdin (daemon → worker) and stdout (worker → daemon). JSON, not pickle: nothing a pipe
carries can run code. Floats survive the trip exactly (``json`` writes ``repr``), so
the attempts a worker measured merge into the run as if measured in the daemon.

The conversation for one run ``r`` (every message carries ``"run": r``)::

    daemon → worker                          worker → daemon
    prepare {target, address, lag_interval}  prepared | failed {error}
    spike {groups: [[at, [conn, ...]], ...], progress}
                                             progress {finished, failed}   (0 or more)
                                             attempts {attempts: [row, ...]}
    abort {reason}                           (nothing: groups not yet started are aborted)
    close                                    closed   (held spike connections closed)
    finish                                   health {loop_lag_p99, ..., rss_bytes}

``at`` is a ``time.monotonic()`` instant: CLOCK_MONOTONIC is the same clock in every
process of one Linux host, and asyncio's ``loop.time()`` reads it.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spikewatch.config import TargetConfig
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine.selfcheck import WindowReport

_HEADER = struct.Struct(">I")

#: A message larger than this is not one a worker would send (a 5000-connection share
#: takes about 1 MB); refusing it keeps a garbled pipe from eating the memory.
MAX_MESSAGE_BYTES = 64 << 20


class WireError(ValueError):
    """A message that is not what the protocol says."""


def encode_message(message: Mapping[str, Any]) -> bytes:
    """Return ``message`` as one length-prefixed JSON frame."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Return the JSON object in one frame's body."""
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("not a message: a JSON object with a 'type' is expected")
    return message


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read one message; return None at a clean end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("the stream ended inside a message header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        body = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise WireError("the stream ended inside a message") from None
    return decode_body(body)


# -- attempts -------------------------------------------------------------------------

#: The fields of an attempt, in the order a row carries them.
ATTEMPT_FIELDS = (
    "phase",
    "conn",
    "planned",
    "started",
    "ended",
    "outcome",
    "detail",
    "status",
    "handshake",
    "first_message",
    "rtt",
    "latency",
)
_TIMES = ("planned", "started", "ended", "handshake", "first_message", "rtt", "latency")


def attempt_to_wire(attempt: Attempt) -> list[Any]:
    """Return an attempt as a row of :data:`ATTEMPT_FIELDS`."""
    return [
        attempt.phase.value,
        attempt.conn,
        attempt.planned,
        attempt.started,
        attempt.ended,
        None if attempt.outcome is None else attempt.outcome.value,
        attempt.detail,
        attempt.status,
        attempt.handshake,
        attempt.first_message,
        attempt.rtt,
        attempt.latency,
    ]


def _time(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WireError(f"attempt field {name} must be a finite number or null, got {value!r}")
    return float(value)


def _integer(name: str, value: object, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WireError(f"attempt field {name} must be an integer, got {value!r}")
    return value


def attempt_from_wire(row: object) -> Attempt:
    """Return the attempt a row describes; raise :class:`WireError` on a malformed row."""
    if not isinstance(row, list) or len(row) != len(ATTEMPT_FIELDS):
        raise WireError(f"an attempt is a list of {len(ATTEMPT_FIELDS)} fields")
    values = dict(zip(ATTEMPT_FIELDS, row, strict=True))
    try:
        phase = Phase(values["phase"])
        outcome = None if values["outcome"] is None else Outcome(values["outcome"])
    except ValueError as exc:
        raise WireError(f"attempt: {exc}") from None
    detail = values["detail"]
    if not isinstance(detail, str):
        raise WireError("attempt field detail must be a string")
    conn = _integer("conn", values["conn"], optional=False)
    assert conn is not None
    times = {name: _time(name, values[name]) for name in _TIMES}
    return Attempt(
        phase,
        conn,
        outcome=outcome,
        detail=detail,
        status=_integer("status", values["status"], optional=True),
        **times,
    )


def apply_share(attempts: Mapping[int, Attempt], rows: Sequence[object]) -> None:
    """Fill the daemon's ``attempts`` (by conn number) with what one worker measured.

    Every conn of the share must come back exactly once with an outcome, and keep its
    planned instant; anything else is a :class:`WireError` and nothing is changed.
    """
    measured = [attempt_from_wire(row) for row in rows]
    seen: set[int] = set()
    for m in measured:
        mine = attempts.get(m.conn)
        if mine is None or m.conn in seen:
            raise WireError(f"attempt for conn {m.conn}, which is not in the share or repeated")
        if m.outcome is None or m.phase != mine.phase or m.planned != mine.planned:
            raise WireError(f"attempt for conn {m.conn} has no outcome or another phase or plan")
        seen.add(m.conn)
    if len(seen) != len(attempts):
        missing = sorted(set(attempts) - seen)[:5]
        raise WireError(f"{len(attempts) - len(seen)} attempt(s) missing, e.g. conn {missing}")
    for m in measured:
        mine = attempts[m.conn]
        mine.started, mine.ended = m.started, m.ended
        mine.outcome, mine.detail, mine.status = m.outcome, m.detail, m.status
        mine.handshake, mine.first_message = m.handshake, m.first_message
        mine.rtt, mine.latency = m.rtt, m.latency


def split_round_robin(items: Sequence[Any], shares: int) -> list[list[Any]]:
    """Deal ``items`` to ``shares`` hands in turn: item k goes to hand k mod ``shares``.

    Each batch of a spike is split evenly, so every worker fires its part of every batch.
    """
    if shares < 1:
        raise ValueError(f"shares must be >= 1, got {shares}")
    hands: list[list[Any]] = [[] for _ in range(shares)]
    for k, item in enumerate(items):
        hands[k % shares].append(item)
    return hands


def group_by_instant(attempts: Iterable[Attempt]) -> list[list[Any]]:
    """Return ``[[at, [conn, ...]], ...]`` for attempts in start order (the spike message)."""
    groups: list[list[Any]] = []
    for attempt in attempts:
        assert attempt.planned is not None
        if not groups or groups[-1][0] != attempt.planned:
            groups.append([attempt.planned, []])
        groups[-1][1].append(attempt.conn)
    return groups


def parse_groups(value: object) -> list[tuple[float, list[int]]]:
    """Check and return the ``groups`` of a spike message."""
    if not isinstance(value, list):
        raise WireError("groups must be a list")
    groups: list[tuple[float, list[int]]] = []
    for group in value:
        if not (isinstance(group, list) and len(group) == 2 and isinstance(group[1], list)):
            raise WireError("a group is [at, [conn, ...]]")
        at = _time("at", group[0])
        if at is None:
            raise WireError("a group needs its instant")
        conns = [_integer("conn", c, optional=False) for c in group[1]]
        groups.append((at, [c for c in conns if c is not None]))
    return groups


# -- the target -------------------------------------------------------------------------


def target_to_wire(target: TargetConfig) -> dict[str, Any]:
    """Return the target as JSON a worker validates back into the same TargetConfig.

    The JWT key goes inline (the worker cannot re-read a file that a reload may have
    changed), so the ``*_file`` fields are dropped; this travels only over the pipe.
    """
    data = target.model_dump(mode="json")
    if target.auth is not None:
        jwt = target.auth.jwt
        wire_jwt = data["auth"]["jwt"]
        wire_jwt["secret_file"] = wire_jwt["private_key_file"] = None
        wire_jwt["secret"] = jwt.secret.get_secret_value() if jwt.secret else None
        wire_jwt["private_key"] = jwt.private_key.get_secret_value() if jwt.private_key else None
    return data


def target_from_wire(data: object) -> TargetConfig:
    """Validate a target sent by :func:`target_to_wire`."""
    return TargetConfig.model_validate(data)


# -- the worker's own health ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """One worker's loop lag, CPU and memory over its part of the spike."""

    loop_lag_p99: float | None
    loop_lag_max: float | None
    cpu_percent: float | None
    cpu_window: float
    rss_bytes: int

    @classmethod
    def from_window(cls, window: WindowReport) -> WorkerHealth:
        """Return the health a window report describes."""
        return cls(
            window.loop_lag_p99,
            window.loop_lag_max,
            window.cpu_percent,
            window.cpu_window,
            window.rss_bytes,
        )

    def to_wire(self) -> dict[str, Any]:
        """Return the fields of a ``health`` message."""
        return {
            "loop_lag_p99": self.loop_lag_p99,
            "loop_lag_max": self.loop_lag_max,
            "cpu_percent": self.cpu_percent,
            "cpu_window": self.cpu_window,
            "rss_bytes": self.rss_bytes,
        }

    @classmethod
    def from_wire(cls, message: Mapping[str, Any]) -> WorkerHealth:
        """Return the health a ``health`` message carries."""
        window = _time("cpu_window", message.get("cpu_window"))
        rss = _integer("rss_bytes", message.get("rss_bytes"), optional=False)
        assert rss is not None
        return cls(
            _time("loop_lag_p99", message.get("loop_lag_p99")),
            _time("loop_lag_max", message.get("loop_lag_max")),
            _time("cpu_percent", message.get("cpu_percent")),
            window or 0.0,
            rss,
        )
