"""What the daemon and its worker processes say to each other: typed messages, as bytes.

Every message is one JSON object behind a 4-byte big-endian length, over the worker's
stdin (daemon → worker) and stdout (worker → daemon). JSON, not pickle: nothing a pipe
carries can run code. Floats survive the trip exactly (shortest round-trip repr both
ways), so the attempts a worker measured merge into the run as if measured in the daemon.

Each message is a frozen pydantic model; the ``type`` field tells them apart
(a discriminated union, validated in one pass: a 5,000-attempt share checks in a few
milliseconds where the hand-written checks took several times that). Anything else
(another type, a missing or extra field, a bool for a number, a non-finite time) is a
:class:`WireError`. The conversation for one run ``r`` (every message carries its ``run``)::

    daemon → worker                          worker → daemon
    Prepare {target, address, lag_interval}  Prepared | Failed {error}
    Spike {groups: [[at, [conn, ...]], ...], progress, slots, full,
           churn, max_in_flight, in_flight_full,
           receive_budget_bytes, receive_budget_named}
                                             Progress {finished, failed}   (0 or more)
                                             Attempts {attempts: [row, ...], peak_in_flight}
    Abort {reason}                           (nothing: groups not yet started are aborted)
    Close                                    Closed   (held spike connections closed)
    Finish                                   Health {loop_lag_p99, ..., rss_bytes}

``at`` is a ``time.monotonic()`` instant: CLOCK_MONOTONIC is the same clock in every
process of one Linux host, and asyncio's ``loop.time()`` reads it.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from spikewatch.config import TargetConfig
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.engine.prober_monitor import WindowReport
from spikewatch.errors import SpikewatchError

_HEADER = struct.Struct(">I")

#: A message larger than this is not one a worker would send (a 5000-connection share
#: takes about 1 MB); refusing it keeps a garbled pipe from eating the memory.
MAX_MESSAGE_BYTES = 64 << 20


class WireError(SpikewatchError, ValueError):
    """A message that is not what the protocol says.

    ``run`` and ``kind`` name the message when its envelope could be read (a JSON object
    with a string ``type`` and ``run``): the stream is intact, and the run decides what
    a bad answer means. Without them (``run`` is None) the stream itself is garbled.
    """

    def __init__(self, message: str, *, run: str | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.run = run
        self.kind = kind


#: A number JSON can carry and a measurement can be (never NaN nor infinite).
Finite: TypeAlias = Annotated[float, Field(allow_inf_nan=False)]
NonNegative: TypeAlias = Annotated[int, Field(ge=0)]

#: The fields of an attempt, in the order a row carries them (the order of Attempt's).
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
    "step",
)
#: One attempt as it travels: a row of :data:`ATTEMPT_FIELDS`, not an object per attempt
#: (a share is thousands of them; the names would be most of its bytes).
AttemptRow: TypeAlias = tuple[
    Phase,
    int,
    Finite | None,
    Finite | None,
    Finite | None,
    Outcome | None,
    str,
    int | None,
    Finite | None,
    Finite | None,
    Finite | None,
    Finite | None,
    str | None,
]


class WireMessage(BaseModel):
    """What every message carries: its run. Strict: a bool is no number, "1" no int."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    run: str


# -- daemon → worker ------------------------------------------------------------------


class Prepare(WireMessage):
    """Build the connection settings for ``target`` at ``address``; answer Prepared."""

    type: Literal["prepare"] = "prepare"
    #: :func:`target_to_wire`'s JSON; the worker validates it and answers Failed if it
    #: is not a target (the worker lives on: a bad config is not a broken pipe).
    target: dict[str, Any]
    address: str
    lag_interval: Annotated[float, Field(gt=0)]


class Spike(WireMessage):
    """Fire these connections at these monotonic instants; answer Attempts."""

    type: Literal["spike"] = "spike"
    groups: list[tuple[Finite, list[int]]]
    #: Whether to stream Progress (the daemon applies an abort rule).
    progress: bool = False
    #: This worker's share of the daemon's free slots; None: no limit of its own.
    slots: NonNegative | None = None
    #: The reason an attempt past ``slots`` is aborted with.
    full: str = ""
    #: A churn: each connection closes after its cycle, none is held (issue 13).
    churn: bool = False
    #: A churn's share of ``churn.max_in_flight``, and the reason a start past it is
    #: aborted with; None: no bound but ``slots``.
    max_in_flight: Annotated[int, Field(ge=1)] | None = None
    in_flight_full: str = ""
    #: This worker's share of limits.max_receive_buffer_bytes (issue 12): the bytes its
    #: connections together may hold in partial messages. None: the default budget.
    receive_budget_bytes: Annotated[int, Field(ge=1)] | None = None
    #: How a refusal names that share (a part of the configured total); empty: the
    #: setting at ``receive_budget_bytes``.
    receive_budget_named: str = ""


class Abort(WireMessage):
    """Abort every group of the spike that has not started yet."""

    type: Literal["abort"] = "abort"
    reason: str


class Close(WireMessage):
    """Close the spike connections held open; answer Closed."""

    type: Literal["close"] = "close"


class Finish(WireMessage):
    """End the run: close what is left, answer Health."""

    type: Literal["finish"] = "finish"


DaemonMessage: TypeAlias = Annotated[
    Prepare | Spike | Abort | Close | Finish, Field(discriminator="type")
]


# -- worker → daemon ------------------------------------------------------------------


class Prepared(WireMessage):
    """Ready to fire."""

    type: Literal["prepared"] = "prepared"


class Failed(WireMessage):
    """Cannot do what was asked (no such run, a target it cannot build)."""

    type: Literal["failed"] = "failed"
    error: str


class Progress(WireMessage):
    """How many of the share's attempts have ended so far, and how many failed."""

    type: Literal["progress"] = "progress"
    finished: NonNegative
    failed: NonNegative


class Attempts(WireMessage):
    """Every attempt of the share, measured."""

    type: Literal["attempts"] = "attempts"
    attempts: list[AttemptRow]
    #: A churn's connections open at once in this worker, at most.
    peak_in_flight: NonNegative = 0


class Closed(WireMessage):
    """The held spike connections are closed; how many the target had dropped (and why
    one was), and how many the worker's own receive budget had closed."""

    type: Literal["closed"] = "closed"
    dropped: NonNegative = 0
    drop_example: str | None = None
    lost_to_prober: NonNegative = 0


class Health(WireMessage):
    """The worker's loop lag, CPU and memory over its part of the spike."""

    type: Literal["health"] = "health"
    loop_lag_p99: Finite | None
    loop_lag_max: Finite | None
    cpu_percent: Finite | None
    cpu_window: Finite
    rss_bytes: NonNegative

    @classmethod
    def of(cls, run: str, health: WorkerHealth) -> Health:
        """Return the message that reports ``health``."""
        return cls(
            run=run,
            loop_lag_p99=health.loop_lag_p99,
            loop_lag_max=health.loop_lag_max,
            cpu_percent=health.cpu_percent,
            cpu_window=health.cpu_window,
            rss_bytes=health.rss_bytes,
        )

    def worker_health(self) -> WorkerHealth:
        """Return the health this message reports."""
        return WorkerHealth(
            self.loop_lag_p99, self.loop_lag_max, self.cpu_percent, self.cpu_window, self.rss_bytes
        )


WorkerMessage: TypeAlias = Annotated[
    Prepared | Failed | Progress | Attempts | Closed | Health, Field(discriminator="type")
]

#: What a worker reads, and what the daemon reads.
DAEMON_MESSAGES: TypeAdapter[DaemonMessage] = TypeAdapter(DaemonMessage)
WORKER_MESSAGES: TypeAdapter[WorkerMessage] = TypeAdapter(WorkerMessage)

M = TypeVar("M")


# -- frames ---------------------------------------------------------------------------


def encode_message(message: WireMessage) -> bytes:
    """Return ``message`` as one length-prefixed JSON frame."""
    body = message.model_dump_json().encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode_message(body: bytes, messages: TypeAdapter[M]) -> M:
    """Return the message in one frame's body; raise :class:`WireError` if it is none."""
    try:
        return messages.validate_json(body)
    except ValidationError as exc:
        raise _refusal(body, exc) from None


def _refusal(body: bytes, exc: ValidationError) -> WireError:
    """Say what is wrong with a body that did not validate, and whose message it was."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as err:
        return WireError(f"not JSON: {err}")
    if not (
        isinstance(data, dict)
        and isinstance(data.get("type"), str)
        and isinstance(data.get("run"), str)
    ):
        return WireError("not a message: a JSON object with a string 'type' and 'run' is expected")
    kind, run = data["type"], data["run"]
    errors = exc.errors(include_url=False)
    if errors[0]["type"] == "union_tag_invalid":
        return WireError(f"unknown message type {kind!r}", run=run, kind=kind)
    problems = "; ".join(_problem(e["loc"], e["msg"], e["type"], e["input"]) for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return WireError(f"{kind} message: {problems}{more}", run=run, kind=kind)


def _problem(loc: tuple[int | str, ...], msg: str, kind: str, value: object) -> str:
    fields = loc[1:]  # loc[0] is the message type, the union's tag
    if (
        len(fields) == 3
        and fields[0] == "attempts"
        and isinstance(fields[2], int)
        and fields[2] < len(ATTEMPT_FIELDS)
    ):
        where = f"attempts[{fields[1]}].{ATTEMPT_FIELDS[fields[2]]}"
    else:
        where = "".join(f"[{f}]" if isinstance(f, int) else f".{f}" for f in fields)
        where = where.removeprefix(".") or "message"
    got = "" if kind == "missing" else f", got {value!r:.40}"
    return f"{where}: {msg}{got}"


async def read_message(reader: asyncio.StreamReader, messages: TypeAdapter[M]) -> M | None:
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
    return decode_message(body, messages)


# -- attempts -------------------------------------------------------------------------


def attempt_to_wire(attempt: Attempt) -> AttemptRow:
    """Return an attempt as a row of :data:`ATTEMPT_FIELDS`."""
    return (
        attempt.phase,
        attempt.conn,
        attempt.planned,
        attempt.started,
        attempt.ended,
        attempt.outcome,
        attempt.detail,
        attempt.status,
        attempt.handshake,
        attempt.first_message,
        attempt.rtt,
        attempt.latency,
        attempt.step,
    )


def apply_share(attempts: Mapping[int, Attempt], rows: Sequence[AttemptRow]) -> None:
    """Fill the daemon's ``attempts`` (by conn number) with what one worker measured.

    Every conn of the share must come back exactly once with an outcome, and keep its
    planned instant; anything else is a :class:`WireError` and nothing is changed.
    """
    measured = [Attempt(*row) for row in rows]  # a row is Attempt's fields, in order
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
        mine.rtt, mine.latency, mine.step = m.rtt, m.latency, m.step


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


def group_by_instant(attempts: Iterable[Attempt]) -> list[tuple[float, list[int]]]:
    """Return ``[(at, [conn, ...]), ...]`` for attempts in start order (a Spike's groups)."""
    groups: list[tuple[float, list[int]]] = []
    for attempt in attempts:
        assert attempt.planned is not None
        if not groups or groups[-1][0] != attempt.planned:
            groups.append((attempt.planned, []))
        groups[-1][1].append(attempt.conn)
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
