"""The result of one run, built from its attempts, and its JSON form (the contract's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spikewatch.core.attempt import DEFLATE_DECLINED, Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind, status_code_label
from spikewatch.core.stats import LatencySummary, summarize
from spikewatch.core.timeline import RunTimeline
from spikewatch.core.verdict import ThresholdCheck

_OUTCOME_ORDER = {outcome: i for i, outcome in enumerate(Outcome)}


def count_outcomes(attempts: Iterable[Attempt]) -> dict[str, int]:
    """Count attempts per outcome, in the contract's outcome order, zeros left out."""
    counts = Counter(a.outcome for a in attempts if a.outcome is not None)
    return {o.value: counts[o] for o in sorted(counts, key=_OUTCOME_ORDER.__getitem__)}


def count_upgrade_statuses(attempts: Iterable[Attempt]) -> dict[str, int]:
    """Count non-101 upgrade answers by their bounded ``code`` label."""
    counts = Counter(
        status_code_label(a.status)
        for a in attempts
        if a.outcome == Outcome.HTTP_STATUS and a.status is not None
    )
    return dict(sorted(counts.items()))


def count_deflate_declined(attempts: Iterable[Attempt]) -> int:
    """Count successful attempts whose server declined the permessage-deflate offer."""
    return sum(1 for a in attempts if a.outcome == Outcome.OK and a.detail == DEFLATE_DECLINED)


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """The failed attempts of one outcome in one step across every phase, with one real
    example (a timeout of the upgrade and one of the echo are two groups)."""

    outcome: Outcome
    count: int
    example: str
    phase: Phase
    step: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "outcome": self.outcome.value,
            "count": self.count,
            "example": self.example,
            "phase": self.phase.value,
            "step": self.step,
        }


#: Steps in the order a connection passes through them; a conversation's own step names
#: after these, in the order their groups first appear; None (aborted, never made) last.
_STEP_ORDER = {"connect": 0, "upgrade": 1, "welcome": 2, "echo": 3}


def group_errors(attempts: Iterable[Attempt]) -> tuple[ErrorGroup, ...]:
    """Group every failed attempt by outcome and step, keeping the first one's message."""
    counts: Counter[tuple[Outcome, str | None]] = Counter()
    examples: dict[tuple[Outcome, str | None], Attempt] = {}
    for a in attempts:
        if a.outcome is None or a.outcome == Outcome.OK:
            continue
        key = (a.outcome, a.step)
        counts[key] += 1
        examples.setdefault(key, a)
    last = len(_STEP_ORDER)
    order = sorted(
        counts,
        key=lambda k: (
            _OUTCOME_ORDER[k[0]],
            last + 1 if k[1] is None else _STEP_ORDER.get(k[1], last),
        ),
    )
    return tuple(
        ErrorGroup(
            o, counts[(o, step)], examples[(o, step)].detail, examples[(o, step)].phase, step
        )
        for o, step in order
    )


def _summary(values: Iterable[float | None]) -> LatencySummary | None:
    return summarize(v for v in values if v is not None)


def _summary_dict(summary: LatencySummary | None) -> dict[str, float] | None:
    return summary.as_dict() if summary is not None else None


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class BaselineSummary:
    """The baseline phase: how many probes, how many succeeded, and B."""

    probes: int
    ok: int
    outcomes: dict[str, int]
    latency: float | None

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "probes": self.probes,
            "ok": self.ok,
            "outcomes": self.outcomes,
            "latency_seconds": _round(self.latency),
        }


def achieved_start_rate(started: float, starts: Iterable[float], rate: float) -> float:
    """Return the connections started per second from ``started`` (the churn's planned
    start) through the last start plus one interval: the offered ``rate`` when every
    planned connection started on time, less when some started late or not at all."""
    made = list(starts)
    if not made:
        return 0.0
    return len(made) / (max(made) - started + 1.0 / rate)


@dataclass(frozen=True, slots=True)
class ChurnSummary:
    """A churn's pace: offered and achieved start rates, its duration, its concurrency."""

    rate: float
    duration: float
    achieved_rate: float
    max_in_flight: int | None
    peak_in_flight: int

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "offered_rate_per_second": _round(self.rate),
            "achieved_start_rate_per_second": _round(self.achieved_rate),
            "duration_seconds": self.duration,
            "max_in_flight": self.max_in_flight,
            "peak_in_flight": self.peak_in_flight,
        }


@dataclass(frozen=True, slots=True)
class SpikeSummary:
    """The spike: outcomes and the distributions of its timings."""

    attempted: int
    outcomes: dict[str, int]
    handshake: LatencySummary | None
    first_message: LatencySummary | None
    message_rtt: LatencySummary | None
    start_lateness: LatencySummary | None
    aborted: bool = False
    #: Spike connections held through ``hold`` that the target dropped, and why one was.
    held_dropped: int = 0
    held_drop_example: str | None = None
    #: Held connections the prober's own receive budget closed: not the target's drops.
    held_lost_to_prober: int = 0
    #: Set for a churn; the JSON then says ``"shape": "churn"`` and its pace.
    churn: ChurnSummary | None = None

    @property
    def success_ratio(self) -> float | None:
        """ok / attempted, None when nothing was planned."""
        if not self.attempted:
            return None
        return self.outcomes.get(Outcome.OK.value, 0) / self.attempted

    @classmethod
    def from_attempts(
        cls,
        attempts: Sequence[Attempt],
        *,
        aborted: bool,
        held_dropped: int = 0,
        held_drop_example: str | None = None,
        held_lost_to_prober: int = 0,
        churn: ChurnSummary | None = None,
    ) -> SpikeSummary:
        """Summarize the spike's attempts."""
        ok = [a for a in attempts if a.outcome == Outcome.OK]
        return cls(
            attempted=len(attempts),
            outcomes=count_outcomes(attempts),
            handshake=_summary(a.handshake for a in attempts),
            first_message=_summary(a.first_message for a in ok),
            message_rtt=_summary(a.rtt for a in ok),
            start_lateness=_summary(a.lateness for a in attempts),
            aborted=aborted,
            held_dropped=held_dropped,
            held_drop_example=held_drop_example,
            held_lost_to_prober=held_lost_to_prober,
            churn=churn,
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        lateness = None
        if self.start_lateness is not None:
            s = self.start_lateness.as_dict()
            lateness = {"p50": s["p50"], "p99": s["p99"], "max": s["max"]}
        ratio = self.success_ratio
        spike = {
            "attempted": self.attempted,
            "outcomes": self.outcomes,
            "success_ratio": None if ratio is None else round(ratio, 6),
            "aborted": self.aborted,
            "handshake_seconds": _summary_dict(self.handshake),
            "first_message_seconds": _summary_dict(self.first_message),
            "message_rtt_seconds": _summary_dict(self.message_rtt),
            "start_lateness_seconds": lateness,
            "held_dropped": self.held_dropped,
            "held_drop_example": self.held_drop_example,
            "held_lost_to_prober": self.held_lost_to_prober,
        }
        if self.churn is not None:
            # Only a churn says its shape: spike and ramp results stay as they were.
            return {"shape": "churn", **spike, "churn": self.churn.as_dict()}
        return spike


@dataclass(frozen=True, slots=True)
class StableSummary:
    """The stable connections: how many were asked for, opened, and lost."""

    connections: int
    opened: int
    dropped: int
    outcomes: dict[str, int]
    message_rtt: LatencySummary | None
    drop_example: str | None = None
    unanswered: int = 0
    #: Closed by the prober's own receive budget: not the target's drops.
    lost_to_prober: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "connections": self.connections,
            "opened": self.opened,
            "dropped": self.dropped,
            "outcomes": self.outcomes,
            "message_rtt_seconds": _summary_dict(self.message_rtt),
            "drop_example": self.drop_example,
            "unanswered_at_end": self.unanswered,
            "lost_to_prober": self.lost_to_prober,
        }


@dataclass(frozen=True, slots=True)
class RecoverySummary:
    """The recovery phase: whether and when the target was back to its baseline."""

    recovered: bool
    seconds: float | None
    probes: int
    outcomes: dict[str, int]
    good_limit: float | None
    timeout: float

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "recovered": self.recovered,
            "seconds": _round(self.seconds),
            "probes": self.probes,
            "outcomes": self.outcomes,
            "good_latency_limit_seconds": _round(self.good_limit),
            "timeout_seconds": self.timeout,
        }


@dataclass(frozen=True, slots=True)
class ProberReport:
    """How the prober itself fared while it measured."""

    saturated: bool
    loop_lag_p99: float | None
    cpu_percent: float | None
    rss_bytes: int | None
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "saturated": self.saturated,
            "loop_lag_p99_seconds": _round(self.loop_lag_p99),
            "cpu_percent": None if self.cpu_percent is None else round(self.cpu_percent, 1),
            "rss_bytes": self.rss_bytes,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class RunResult:
    """Everything one run found, as the contract's JSON describes it."""

    id: str
    target: str
    scenario: str
    result: RunResultKind
    started_at: float
    duration: float
    baseline: BaselineSummary
    spike: SpikeSummary | None
    stable: StableSummary | None
    recovery: RecoverySummary | None
    thresholds: tuple[ThresholdCheck, ...]
    prober: ProberReport
    errors: tuple[ErrorGroup, ...]
    message: str = ""
    upgrade_statuses: Mapping[str, int] = field(default_factory=dict)
    timeline: Mapping[str, float] = field(default_factory=dict)
    #: What the target did over time (the detail's ``timeline``), None when not recorded.
    trace: RunTimeline | None = None
    #: Successful attempts whose server declined the permessage-deflate offer.
    deflate_declined: int = 0
    #: The target's version (``unknown`` when it could not be read, and why); None when
    #: the target's config names no ``version:`` (issue 17).
    target_version: str | None = None
    target_version_reason: str | None = None

    @property
    def passed(self) -> bool:
        """Whether the run passed."""
        return self.result == RunResultKind.PASSED

    def as_dict(self) -> dict[str, Any]:
        """Return the contract's JSON form (plus ``message``, ``detail``)."""
        started = datetime.fromtimestamp(self.started_at, UTC)
        detail: dict[str, Any] = {
            "upgrade_statuses": dict(self.upgrade_statuses),
            "timeline_seconds": {k: round(v, 6) for k, v in self.timeline.items()},
            "timeline": self.trace.as_dict() if self.trace is not None else None,
        }
        if self.deflate_declined:  # only when compression was offered and declined
            detail["deflate_declined"] = self.deflate_declined
        if self.target_version_reason is not None:
            detail["target_version_reason"] = self.target_version_reason
        return {
            "id": self.id,
            "target": self.target,
            "scenario": self.scenario,
            "target_version": self.target_version,
            "result": self.result.value,
            "message": self.message,
            "started_at": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duration_seconds": round(self.duration, 3),
            "baseline": self.baseline.as_dict(),
            "spike": self.spike.as_dict() if self.spike else None,
            "stable": self.stable.as_dict() if self.stable else None,
            "recovery": self.recovery.as_dict() if self.recovery else None,
            "thresholds": [c.as_dict() for c in self.thresholds],
            "prober": self.prober.as_dict(),
            "errors": [e.as_dict() for e in self.errors],
            "detail": detail,
        }
