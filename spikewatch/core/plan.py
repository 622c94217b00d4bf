"""Plan a spike: who connects when, as offsets from the spike's start.

A plan is a tuple of :class:`PlannedConnection` in start order. The engine turns offsets
into deadlines on its own clock; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlannedConnection:
    """One spike connection: its number, its batch or ramp step, its start offset in seconds."""

    index: int
    group: int
    offset: float


def plan_spike(
    connections: int, batches: int, batch_interval: float
) -> tuple[PlannedConnection, ...]:
    """Plan an avalanche: ``connections`` split as evenly as possible into ``batches``.

    The first ``connections % batches`` batches get one connection more; batch ``k`` starts
    at ``k * batch_interval``, all of its connections at once.
    """
    if connections < 0:
        raise ValueError(f"connections must be >= 0, got {connections}")
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    _check_interval("batch_interval", batch_interval)
    size, extra = divmod(connections, batches)
    return plan_ramp([size + 1 if k < extra else size for k in range(batches)], batch_interval)


def plan_ramp(steps: Sequence[int], step_interval: float) -> tuple[PlannedConnection, ...]:
    """Plan a ramp: step ``k`` opens ``steps[k]`` connections at ``k * step_interval``."""
    _check_interval("step_interval", step_interval)
    planned: list[PlannedConnection] = []
    for group, count in enumerate(steps):
        if count < 0:
            raise ValueError(f"steps[{group}] must be >= 0, got {count}")
        # Multiply rather than accumulate so that late steps do not drift by rounding.
        offset = group * step_interval
        first = len(planned)
        planned.extend(PlannedConnection(first + i, group, offset) for i in range(count))
    return tuple(planned)


def churn_attempts(rate: float, duration: float) -> int:
    """Return how many churn connections start within ``duration``: one at every ``i / rate``.

    A product that is a whole number up to rounding (0.1/s for 30 s) counts as one, so
    that no start lands on the duration's end by a rounding error.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a finite number > 0, got {rate}")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a finite number > 0, got {duration}")
    product = rate * duration
    nearest = round(product)
    whole = abs(product - nearest) <= 1e-9 * max(1.0, product)
    return max(1, nearest if whole else math.ceil(product))


def plan_churn(rate: float, duration: float) -> tuple[PlannedConnection, ...]:
    """Plan a churn: connection ``i`` starts at ``i / rate``, each at its own instant."""
    count = churn_attempts(rate, duration)
    # Divide rather than accumulate, as in plan_ramp: no drift over a long churn.
    return tuple(PlannedConnection(i, i, i / rate) for i in range(count))


def shard_plan(
    plan: Sequence[PlannedConnection], replica: int, replicas: int
) -> tuple[PlannedConnection, ...]:
    """Return the share of ``replica`` (0-based) out of ``replicas``: every ``replicas``-th index.

    Connections keep their index, group and offset, so the shares of all replicas are
    disjoint, together are exactly the plan, and start at the same moments the plan says.
    """
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if not 0 <= replica < replicas:
        raise ValueError(f"replica must be in [0, {replicas}), got {replica}")
    return tuple(p for p in plan if p.index % replicas == replica)


def plan_duration(plan: Sequence[PlannedConnection]) -> float:
    """Return the offset of the last planned start (0.0 for an empty plan)."""
    return max((p.offset for p in plan), default=0.0)


def _check_interval(name: str, value: float) -> None:
    # NaN and infinity would silently plan starts that never come.
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
