"""How the reference target degrades: burst detection, recovery, capacity and counters.

Pure: :class:`TargetState` never touches a socket or sleeps. The aiohttp handler asks
it what to do with each upgrade request (:meth:`TargetState.upgrade_requested`) and
tells it what happened (:meth:`~TargetState.reserve`, :meth:`~TargetState.opened`,
:meth:`~TargetState.closed`); tests drive it with a fake clock.

Burst rules, for knobs ``burst_threshold`` N, ``burst_window`` W, ``recovery_delay`` R:

- An upgrade request is *part of a burst* when, counting it, at least N upgrade
  requests arrived within the last W seconds.
- The target is degraded until R seconds after the last request that was part of a
  burst. Every upgrade request that is part of a burst, or arrives while the target is
  degraded, is answered ``slow_delay`` seconds later than usual.
- A burst starts (``bursts`` counts it) with a request that is part of a burst while
  the target was not degraded and the previous request was not part of a burst within
  the last W seconds. With ``drop_on_burst``, every connection open at that moment was
  open before the burst started, and is dropped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from spikewatch.target.behaviour import TargetBehaviour

#: A clock in seconds: monotonic for decisions, wall-clock (epoch) for reporting.
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, eq=False)
class TargetStats(Mapping[str, object]):
    """The counters of ``GET /stats``; times are epoch seconds.

    Read them as attributes (``stats.open``) or as the JSON object's keys
    (``stats["open"]``); a TargetStats equals the dict ``GET /stats`` answers.
    """

    #: Upgrade requests that arrived, whatever their answer.
    requests: int
    #: Upgrades accepted (101).
    upgrades: int
    #: Upgrades refused with 503 because the target was full.
    rejected_capacity: int
    #: Upgrades refused with 401 for a missing or invalid token.
    rejected_auth: int
    #: WebSocket connections open now.
    open: int
    #: The most connections open at once so far.
    peak_open: int
    #: Bursts detected so far.
    bursts: int
    #: Connections closed (1012) by ``drop_on_burst``.
    dropped: int
    #: Whether the target is degraded now.
    degraded: bool
    #: When the latest degradation ends, or ended; None before the first burst.
    degraded_until_epoch: float | None
    #: When the latest request that was part of a burst arrived; None before the first.
    last_burst_epoch: float | None

    def __getitem__(self, key: str) -> object:
        if key not in _STATS_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_STATS_FIELDS)

    def __len__(self) -> int:
        return len(_STATS_FIELDS)

    def as_dict(self) -> dict[str, object]:
        """Return the counters as a plain JSON-ready dict."""
        return {name: getattr(self, name) for name in _STATS_FIELDS}


_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(TargetStats))


@dataclass(frozen=True, slots=True)
class UpgradeArrival:
    """What to do with one upgrade request that just arrived."""

    #: Seconds to wait before answering (``handshake_delay``, plus ``slow_delay`` if degraded).
    delay: float
    #: Whether the request met a degraded target (it is part of a burst, or recovery is on).
    degraded: bool
    #: Whether this request started a new burst.
    burst_started: bool
    #: Connections to close now (``drop_on_burst``): those open before the burst started.
    drop: tuple[int, ...] = ()


class TargetState:
    """The reference target's load, degradation and counters, over an injected clock."""

    def __init__(
        self,
        behaviour: TargetBehaviour,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._behaviour = behaviour
        self._clock = clock
        self._wall_clock = wall_clock
        # The last `burst_threshold` arrival times: enough to tell whether N arrived within W.
        self._arrivals: deque[float] = deque(maxlen=behaviour.burst_threshold or 1)
        # The last request that was part of a burst: reported, and ``_streak_from`` is the
        # same instant unless a reset ended the burst (then a new one counts as new).
        self._last_burst_member: float | None = None
        self._streak_from: float | None = None
        self._degraded_until: float | None = None
        self._next_conn = 1
        self._open: set[int] = set()
        self._reserved = 0
        self._requests = 0
        self._upgrades = 0
        self._rejected_capacity = 0
        self._rejected_auth = 0
        self._peak_open = 0
        self._bursts = 0
        self._dropped = 0

    @property
    def behaviour(self) -> TargetBehaviour:
        """Return the knobs in force now."""
        return self._behaviour

    @behaviour.setter
    def behaviour(self, behaviour: TargetBehaviour) -> None:
        threshold = behaviour.burst_threshold or 1
        if threshold != self._arrivals.maxlen:
            self._arrivals = deque(self._arrivals, maxlen=threshold)
        self._behaviour = behaviour

    @property
    def open(self) -> int:
        """Return how many WebSocket connections are open now."""
        return len(self._open)

    def upgrade_requested(self) -> UpgradeArrival:
        """Record an upgrade request arriving now and decide how it is answered."""
        now = self._clock()
        knobs = self._behaviour
        self._requests += 1
        was_degraded = self._degraded_at(now)
        member = False
        started = False
        drop: tuple[int, ...] = ()
        if knobs.burst_threshold is not None:
            self._arrivals.append(now)
            member = (
                len(self._arrivals) >= knobs.burst_threshold
                and self._arrivals[0] > now - knobs.burst_window
            )
        if member:
            previous = self._streak_from
            continues = previous is not None and now - previous <= knobs.burst_window
            started = not (was_degraded or continues)
            self._last_burst_member = self._streak_from = now
            self._degraded_until = now + knobs.recovery_delay
            if started:
                self._bursts += 1
                if knobs.drop_on_burst:
                    drop = tuple(sorted(self._open))
                    self._dropped += len(drop)
        degraded = member or was_degraded
        delay = knobs.handshake_delay + (knobs.slow_delay if degraded else 0.0)
        return UpgradeArrival(delay=delay, degraded=degraded, burst_started=started, drop=drop)

    def auth_rejected(self) -> None:
        """Count an upgrade refused for a missing or invalid token."""
        self._rejected_auth += 1

    def reserve(self) -> bool:
        """Claim a connection slot for an upgrade about to be answered; False when full."""
        capacity = self._behaviour.capacity
        if capacity is not None and self._reserved + self.open >= capacity:
            self._rejected_capacity += 1
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a slot whose upgrade did not complete."""
        self._reserved -= 1

    def opened(self) -> int:
        """Turn a reserved slot into an open connection and return its number (from 1)."""
        self._reserved -= 1
        conn = self._next_conn
        self._next_conn += 1
        self._open.add(conn)
        self._upgrades += 1
        self._peak_open = max(self._peak_open, self.open)
        return conn

    def closed(self, conn: int) -> None:
        """Forget connection ``conn``, which is closed now."""
        self._open.discard(conn)

    def retry_after(self) -> int:
        """Return the whole seconds a refused client should wait (``Retry-After``)."""
        now = self._clock()
        until = self._degraded_until
        if until is not None and now < until:
            return max(1, math.ceil(until - now))
        return 1

    def end_degradation(self) -> None:
        """Recover now: forget recent arrivals and end any degradation in progress."""
        now = self._clock()
        self._arrivals.clear()
        self._streak_from = None
        if self._degraded_until is not None:
            self._degraded_until = min(self._degraded_until, now)

    def stats(self) -> TargetStats:
        """Return the counters, with times converted to epoch seconds."""
        now = self._clock()
        # One reading of each clock, so that reported instants keep their true distances.
        to_epoch = self._wall_clock() - now
        return TargetStats(
            requests=self._requests,
            upgrades=self._upgrades,
            rejected_capacity=self._rejected_capacity,
            rejected_auth=self._rejected_auth,
            open=self.open,
            peak_open=self._peak_open,
            bursts=self._bursts,
            dropped=self._dropped,
            degraded=self._degraded_at(now),
            degraded_until_epoch=_shifted(self._degraded_until, to_epoch),
            last_burst_epoch=_shifted(self._last_burst_member, to_epoch),
        )

    def _degraded_at(self, now: float) -> bool:
        return self._degraded_until is not None and now < self._degraded_until


def _shifted(instant: float | None, offset: float) -> float | None:
    return None if instant is None else instant + offset
