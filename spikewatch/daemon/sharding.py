"""Scale-out arithmetic: which replica this is, which slot a run belongs to, when it spikes.

N replicas each fire 1/N of every spike (round-robin by connection index, see
:func:`spikewatch.core.plan.shard_plan`) at the same wall-clock instant: the scheduled
slot plus a fixed delay, so that the spike starts together although every replica
runs its own baseline first. Slots are aligned to the wall clock (multiples of
``every`` since the Unix epoch, or cron minutes), so replicas agree on them without
talking to each other; clock skew between their hosts shifts each one's start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spikewatch.config import ScenarioConfig, ScheduleConfig, ShardingConfig
from spikewatch.errors import ConfigError, ConfigProblem

_ORDINAL = re.compile(r"-(\d+)$")

#: Cron expressions (five fields) fire on whole minutes.
_CRON_GRANULARITY = 60.0


@dataclass(frozen=True, slots=True)
class Shard:
    """This replica: its index among ``replicas``."""

    index: int
    replicas: int


def resolve_shard(sharding: ShardingConfig, hostname: str) -> Shard:
    """Return this replica's shard: the configured index, or the ordinal ending ``hostname``."""
    if sharding.index is not None:
        return Shard(sharding.index, sharding.replicas)
    if not sharding.enabled:
        return Shard(0, 1)
    match = _ORDINAL.search(hostname)
    if match is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "sharding.index",
                    f"not set, and the host name {hostname!r} does not end in -<ordinal> "
                    "(set SPIKEWATCH_SHARDING__INDEX, e.g. from the pod-index label)",
                )
            ]
        )
    index = int(match.group(1))
    if index >= sharding.replicas:
        raise ConfigError(
            [
                ConfigProblem(
                    "sharding.index",
                    f"{index} from the host name {hostname!r} is not less than "
                    f"sharding.replicas ({sharding.replicas})",
                )
            ]
        )
    return Shard(index, sharding.replicas)


def aligned_slot(now: float, schedule: ScheduleConfig) -> float:
    """Return the wall-clock slot (epoch seconds) a run fired at ``now`` belongs to.

    The nearest multiple of ``every`` (or the nearest minute for cron), so a replica
    whose timer fired a little late or early still names the same slot as the others.
    """
    step = schedule.every if schedule.every is not None else _CRON_GRANULARITY
    return round(now / step) * step


def spike_delay(sharding: ShardingConfig, scenario: ScenarioConfig) -> float:
    """Return how long after its slot every replica's spike starts."""
    if sharding.spike_delay is not None:
        return sharding.spike_delay
    baseline = scenario.baseline.probes * scenario.baseline.interval
    return baseline + (3.0 if scenario.stable is not None else 2.0)
