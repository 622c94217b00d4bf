"""Decide the baseline and the recovery of a target, exactly as the spec defines them.

Baseline: B is the median latency of the successful baseline probes; the target is down
when fewer than half of them succeed, and then no spike is fired.

Recovery: from T0 (the end of the last spike attempt) a probe starts every interval. A
probe is *good* when it succeeds within ``B * (1 + tolerance) + slack``. The target has
recovered at the start of the first probe that begins a run of ``consecutive`` good
probes, ordered by start time; with no such run among the probes started before
``T0 + timeout``, it did not recover.

:class:`RecoveryTracker` applies that rule to probes that overlap and finish out of
order; the engine feeds it start and finish events and asks it for the decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spikewatch.core.stats import median

RecoveryState = Literal["pending", "recovered", "not_recovered"]


@dataclass(frozen=True, slots=True)
class Baseline:
    """The outcome of the baseline phase: B in seconds, or a target that is down."""

    probes: int
    ok: int
    latency: float | None
    target_down: bool


def decide_baseline(probes: int, ok_latencies: Sequence[float]) -> Baseline:
    """Decide B from ``probes`` baseline attempts and the latencies of those that succeeded.

    The target is down when fewer than half succeed; exactly half is enough to go on.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    ok = len(ok_latencies)
    if ok > probes:
        raise ValueError(f"{ok} successful probes out of only {probes}")
    if ok * 2 < probes:
        return Baseline(probes=probes, ok=ok, latency=None, target_down=True)
    return Baseline(probes=probes, ok=ok, latency=median(ok_latencies), target_down=False)


def good_probe_limit(baseline: float, tolerance: float, slack: float) -> float:
    """Return the slowest a recovery probe may be and still be good: B * (1 + tolerance) + slack."""
    for name, value in (("baseline", baseline), ("tolerance", tolerance), ("slack", slack)):
        # `not >=` also rejects NaN, which would make every probe bad.
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    return baseline * (1.0 + tolerance) + slack


def is_good_probe(ok: bool, latency: float | None, limit: float) -> bool:
    """Return whether a recovery probe counts as good: it succeeded within ``limit`` seconds."""
    return ok and latency is not None and latency <= limit


@dataclass(frozen=True, slots=True)
class RecoveryDecision:
    """Where recovery stands: still ``pending``, ``recovered`` (when), or ``not_recovered``."""

    state: RecoveryState
    recovered_at: float | None
    seconds: float | None
    probes_started: int
    probes_finished: int
    good: int


class RecoveryTracker:
    """Decide recovery from probe start and finish events; read no clock.

    Call :meth:`probe_started` for each probe in start order, :meth:`probe_finished` as
    each one ends (in any order), and :meth:`close` once the deadline has passed and
    every started probe has finished; a probe given up on is finished as not good.

    A decision is final only when no probe that started earlier is still pending: walk
    the probes in start order and stop at the first pending one. Once recovered, later
    results do not change the decision.
    """

    def __init__(self, t0: float, consecutive: int, timeout: float) -> None:
        if not math.isfinite(t0):
            raise ValueError(f"t0 must be finite, got {t0}")
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self._t0 = t0
        self._consecutive = consecutive
        self._deadline = t0 + timeout
        # Per probe, in start order: its start and its result (None while pending).
        self._starts: list[float] = []
        self._results: list[bool | None] = []
        self._position: dict[int, int] = {}
        self._finished = 0
        self._good = 0
        # Probes [0, _walked) are finished; _run counts the good ones at the end of them.
        self._walked = 0
        self._run = 0
        self._recovered_index: int | None = None
        # True once some run of `consecutive` good probes has finished, even behind a
        # pending probe: recovery is then sure, only its moment may still move earlier.
        self._certain = False
        self._closed = False

    @property
    def t0(self) -> float:
        """Return T0, the moment recovery is measured from."""
        return self._t0

    @property
    def deadline(self) -> float:
        """Return T0 + timeout: no probe may start at or after it."""
        return self._deadline

    def probe_started(self, probe_id: int, start: float) -> None:
        """Record that probe ``probe_id`` started at ``start`` (no earlier than the last start)."""
        self._check_open()
        if probe_id in self._position:
            raise ValueError(f"probe {probe_id} was already started")
        if not self._t0 <= start < self._deadline:
            raise ValueError(
                f"probe start {start} is outside [t0, deadline) = [{self._t0}, {self._deadline})"
            )
        if self._starts and start < self._starts[-1]:
            raise ValueError(
                f"probe start {start} is before the previous start {self._starts[-1]}; "
                "start probes in time order"
            )
        self._position[probe_id] = len(self._starts)
        self._starts.append(start)
        self._results.append(None)

    def probe_finished(self, probe_id: int, good: bool) -> None:
        """Record the result of probe ``probe_id``: good, or not (failed, slow, given up on)."""
        self._check_open()
        position = self._position.get(probe_id)
        if position is None:
            raise ValueError(f"probe {probe_id} was never started")
        if self._results[position] is not None:
            raise ValueError(f"probe {probe_id} already finished")
        self._results[position] = good
        self._finished += 1
        if good:
            self._good += 1
            if not self._certain:
                self._certain = self._good_run_through(position) >= self._consecutive
        self._walk()

    def decision(self) -> RecoveryDecision:
        """Return the decision so far: ``pending`` until it is final."""
        if self._recovered_index is not None:
            recovered_at = self._starts[self._recovered_index]
            return self._decision("recovered", recovered_at, recovered_at - self._t0)
        if self._closed:
            return self._decision("not_recovered", None, None)
        return self._decision("pending", None, None)

    def close(self) -> RecoveryDecision:
        """End tracking after the deadline and return the final decision.

        Every started probe must have finished unless recovery is already decided, since a
        pending probe could still begin the qualifying run.
        """
        if self._recovered_index is None and self._finished < len(self._starts):
            pending = len(self._starts) - self._finished
            raise ValueError(
                f"{pending} probe(s) still pending; finish them (as not good if given up on) "
                "before closing"
            )
        self._closed = True
        return self.decision()

    def wants_more_probes(self, now: float) -> bool:
        """Return whether another probe should start at ``now``.

        No once recovery is sure (even if its exact moment still waits on an earlier
        pending probe, no later probe can change it) or once ``now`` reaches the deadline.
        """
        return not (self._closed or self._certain) and now < self._deadline

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("recovery tracking is closed")

    def _good_run_through(self, position: int) -> int:
        """Return the length of the run of finished good probes that includes ``position``."""
        first = position
        while first > 0 and self._results[first - 1] is True:
            first -= 1
        last = position
        while last + 1 < len(self._results) and self._results[last + 1] is True:
            last += 1
        return last - first + 1

    def _walk(self) -> None:
        """Advance through finished probes in start order until the first pending one."""
        while self._recovered_index is None and self._walked < len(self._results):
            result = self._results[self._walked]
            if result is None:
                return
            self._run = self._run + 1 if result else 0
            self._walked += 1
            if self._run == self._consecutive:
                self._recovered_index = self._walked - self._consecutive

    def _decision(
        self, state: RecoveryState, recovered_at: float | None, seconds: float | None
    ) -> RecoveryDecision:
        return RecoveryDecision(
            state=state,
            recovered_at=recovered_at,
            seconds=seconds,
            probes_started=len(self._starts),
            probes_finished=self._finished,
            good=self._good,
        )
