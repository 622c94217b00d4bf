"""Judge a run: check its thresholds and decide its result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spikewatch.core.outcomes import RunResultKind


@dataclass(frozen=True, slots=True)
class ThresholdLimits:
    """A scenario's thresholds; None leaves that one unchecked."""

    success_ratio: float | None = None
    handshake_p95: float | None = None
    first_message_p95: float | None = None
    message_rtt_p95: float | None = None
    recovery: float | None = None
    dropped_stable: int | None = None
    dropped_held: int | None = None


@dataclass(frozen=True, slots=True)
class Measurements:
    """What a run measured; None where nothing could be measured (no successful connection)."""

    success_ratio: float | None
    handshake_p95: float | None
    first_message_p95: float | None
    message_rtt_p95: float | None
    recovered: bool
    recovery_seconds: float | None
    dropped_stable: int
    #: Spike connections held open through ``hold`` that the target dropped.
    dropped_held: int = 0


@dataclass(frozen=True, slots=True)
class ThresholdCheck:
    """One threshold against its measured value (None when unmeasured, which fails)."""

    name: str
    limit: float
    value: float | None
    passed: bool

    def as_dict(self) -> dict[str, str | float | bool | None]:
        """Return the check as it appears in the run result's ``thresholds`` list."""
        return {"name": self.name, "limit": self.limit, "value": self.value, "passed": self.passed}


def evaluate_thresholds(limits: ThresholdLimits, m: Measurements) -> tuple[ThresholdCheck, ...]:
    """Check each configured threshold, then the implicit ``recovered`` check.

    Order: success_ratio, handshake_p95, first_message_p95, message_rtt_p95, recovery,
    dropped_stable, dropped_held, recovered. ``success_ratio`` passes at or above its
    limit, the others at or below theirs. A value that could not be measured fails. The last check,
    ``recovered`` (limit 1, value 1 or 0), is always there: a run in which the target did
    not recover never passes, with or without a ``recovery`` threshold.
    """
    recovery_seconds = m.recovery_seconds if m.recovered else None
    at_most: tuple[tuple[str, float | None, float | None], ...] = (
        ("handshake_p95", limits.handshake_p95, m.handshake_p95),
        ("first_message_p95", limits.first_message_p95, m.first_message_p95),
        ("message_rtt_p95", limits.message_rtt_p95, m.message_rtt_p95),
        ("recovery", limits.recovery, recovery_seconds),
        ("dropped_stable", limits.dropped_stable, m.dropped_stable),
        ("dropped_held", limits.dropped_held, m.dropped_held),
    )
    checks: list[ThresholdCheck] = []
    if limits.success_ratio is not None:
        value = m.success_ratio
        passed = value is not None and value >= limits.success_ratio
        checks.append(ThresholdCheck("success_ratio", limits.success_ratio, value, passed))
    for name, limit, value in at_most:
        if limit is not None:
            checks.append(ThresholdCheck(name, limit, value, value is not None and value <= limit))
    recovered = 1.0 if m.recovered else 0.0
    checks.append(ThresholdCheck("recovered", 1.0, recovered, m.recovered))
    return tuple(checks)


def decide_result(
    *, target_down: bool, aborted: bool, invalid: bool, checks: Sequence[ThresholdCheck]
) -> RunResultKind:
    """Return the run's result: invalid > target_down > aborted > failed > passed.

    ``error`` (the run itself crashed) is decided by the engine, not here.
    """
    if invalid:
        return RunResultKind.INVALID
    if target_down:
        return RunResultKind.TARGET_DOWN
    if aborted:
        return RunResultKind.ABORTED
    if not all(check.passed for check in checks):
        return RunResultKind.FAILED
    return RunResultKind.PASSED
