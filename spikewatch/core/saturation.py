"""Decide whether the prober was past its own limits while it measured."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProberLimits:
    """Beyond these, a run's figures describe the prober, not the target."""

    max_loop_lag_p99: float
    max_start_lateness_p99: float
    max_cpu_percent: float


def saturation_reasons(
    limits: ProberLimits,
    *,
    loop_lag_p99: float | None,
    start_lateness_p99: float | None,
    cpu_percent: float | None,
) -> tuple[str, ...]:
    """Return why the prober was saturated (empty when it was not)."""
    reasons: list[str] = []
    if loop_lag_p99 is not None and loop_lag_p99 > limits.max_loop_lag_p99:
        reasons.append(
            f"event-loop lag p99 {loop_lag_p99 * 1000:.1f}ms > {limits.max_loop_lag_p99 * 1000:g}ms"
        )
    if start_lateness_p99 is not None and start_lateness_p99 > limits.max_start_lateness_p99:
        reasons.append(
            f"spike start lateness p99 {start_lateness_p99 * 1000:.1f}ms > "
            f"{limits.max_start_lateness_p99 * 1000:g}ms"
        )
    if cpu_percent is not None and cpu_percent > limits.max_cpu_percent:
        reasons.append(f"prober CPU {cpu_percent:.0f}% > {limits.max_cpu_percent:g}% of a core")
    return tuple(reasons)
