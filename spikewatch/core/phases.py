"""What each phase of a run recorded, as the runner hands it over at the phase's end.

A run goes baseline → stable (opened, then held) → spike → recovery; the prober watches
its own health meanwhile. Each record is built once, when its phase ends or is cut
short (deadline, error, cancellation), and :func:`~spikewatch.core.report.build_run_result`
turns the records into the run's result.

The attempts are the run's own objects: one still in flight when its phase was cut
short gets its outcome when the run closes it, before the result is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spikewatch.core.attempt import Attempt
from spikewatch.core.recovery import Baseline, RecoveryDecision
from spikewatch.core.saturation import ProcessHealth, WorkerShare
from spikewatch.core.version import TargetVersion


@dataclass(frozen=True, slots=True)
class BaselinePhase:
    """The baseline's probes and what they decided: B, or a target that is down."""

    attempts: tuple[Attempt, ...]
    decision: Baseline


@dataclass(frozen=True, slots=True)
class StablePhase:
    """The stable connections over the whole run: asked for, opened, their echoes, losses."""

    connections: int
    attempts: tuple[Attempt, ...]
    rtts: tuple[float, ...]
    dropped: int
    drop_example: str | None = None
    #: Connections whose last ping (or echo) was still unanswered when the run closed
    #: them: not a drop (its timeout had not passed), but not an answer either.
    unanswered: int = 0
    #: When each lost connection was lost (monotonic seconds), for the run's timeline.
    drops: tuple[float, ...] = ()
    #: Connections the prober itself closed for want of receive buffer
    #: (limits.max_receive_buffer_bytes): not in ``dropped`` nor ``drops``; the run is
    #: invalid (its self-check names them).
    lost_to_prober: int = 0


@dataclass(frozen=True, slots=True)
class ChurnPlan:
    """What a churn was asked to do, and how far it got: the offered rate (this process's
    share of it), when it started (monotonic), and how many of its connections were open
    at once, at most."""

    rate: float
    duration: float
    started: float
    max_in_flight: int | None = None
    peak_in_flight: int = 0


@dataclass(frozen=True, slots=True)
class SpikePhase:
    """The spike's attempts (in plan order), whether the abort rule stopped it, and how
    many of the connections held open through ``hold`` the target dropped (with why)."""

    attempts: tuple[Attempt, ...]
    aborted: bool = False
    held_dropped: int = 0
    held_drop_example: str | None = None
    #: Held connections the prober's own receive budget closed: not in ``held_dropped``;
    #: the run is invalid (its self-check names them).
    held_lost_to_prober: int = 0
    #: Set when the spike was a churn (a rate of short connections), else None.
    churn: ChurnPlan | None = None


@dataclass(frozen=True, slots=True)
class RecoveryPhase:
    """The recovery probes, the good-probe limit and timeout, and the decision.

    ``decision`` is None when the run was cut short before recovery was decided.
    """

    attempts: tuple[Attempt, ...]
    decision: RecoveryDecision | None
    good_limit: float
    timeout: float


@dataclass(frozen=True, slots=True)
class PhaseLag:
    """The prober's event-loop lag p99 over one phase that measured the target."""

    phase: str
    loop_lag_p99: float | None


@dataclass(frozen=True, slots=True)
class ProberHealth:
    """The prober's own figures: over the spike when one was fired, else memory now.

    ``workers`` is None when the spike was fired from the daemon's own event loop.
    ``phases`` holds the loop lag over the other phases that produce a figure (the
    baseline, recovery): a stall there fakes B or the recovery time (issue 12).
    """

    daemon: ProcessHealth
    over_spike: bool
    workers: tuple[WorkerShare, ...] | None = None
    phases: tuple[PhaseLag, ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Everything one run recorded, from which its result is built.

    ``error`` says why the run itself failed (its result is then ``error``), None when
    it ran to its end. ``timeline`` holds seconds since the run's start; ``origin`` is
    that start on the monotonic clock the attempts' instants are read on.
    """

    id: str
    target: str
    scenario: str
    started_at: float
    duration: float
    baseline: BaselinePhase
    stable: StablePhase | None
    spike: SpikePhase | None
    recovery: RecoveryPhase | None
    prober: ProberHealth
    error: str | None = None
    timeline: Mapping[str, float] = field(default_factory=dict)
    origin: float = 0.0
    #: The target's version (issue 17); None when its config names no ``version:``.
    version: TargetVersion | None = None

    def attempts(self) -> tuple[Attempt, ...]:
        """Return every attempt of the run, phase by phase."""
        stable = self.stable.attempts if self.stable else ()
        spike = self.spike.attempts if self.spike else ()
        recovery = self.recovery.attempts if self.recovery else ()
        return (*self.baseline.attempts, *stable, *spike, *recovery)
