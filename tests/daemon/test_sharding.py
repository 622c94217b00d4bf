"""Scale-out: shares of a spike, replica index, aligned slots, replicas firing together."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from spikewatch.config import ScenarioConfig, SpikewatchConfig, parse_config
from spikewatch.config.model import ScheduleConfig, ShardingConfig
from spikewatch.core.outcomes import Phase
from spikewatch.core.saturation import ProberLimits
from spikewatch.daemon.schedule import build_trigger
from spikewatch.daemon.sharding import Shard, aligned_slot, resolve_shard, spike_delay
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import Prober, execute_run, spike_plan
from spikewatch.errors import ConfigError
from spikewatch.target import TargetBehaviour, start_reference_target

SHAPES: list[dict[str, Any]] = [
    {"spike": {"connections": 25, "batches": 3, "batch_interval": "1s"}},
    {"spike": {"connections": 1000, "batches": 1}},
    {"spike": {"connections": 7, "batches": 7, "batch_interval": "100ms"}},
    {"spike": {"connections": 101, "batches": 4, "batch_interval": "250ms"}},
    {"ramp": {"steps": [5, 10, 15], "step_interval": "10s"}},
    {"ramp": {"steps": [1, 2, 3, 50, 8], "step_interval": "2s"}},
]


def config(scenario: dict[str, Any], **root: Any) -> SpikewatchConfig:
    return parse_config(
        {
            "targets": [{"name": "t", "url": "ws://127.0.0.1:9/ws"}],
            "scenarios": [{"name": "s", **scenario}],
            **root,
        }
    )


def scenario_of(shape: dict[str, Any]) -> ScenarioConfig:
    return config(shape).scenarios[0]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("replicas", range(1, 9))
def test_shares_sum_to_the_whole_spike_at_the_same_instants(
    shape: dict[str, Any], replicas: int
) -> None:
    """For every N and shape, the replicas' shares make up the spike exactly, same instants."""
    scenario = scenario_of(shape)
    whole = spike_plan(scenario)
    shares = [spike_plan(scenario, (i, replicas)) for i in range(replicas)]
    combined = sorted((p for share in shares for p in share), key=lambda p: p.index)
    assert combined == sorted(whole, key=lambda p: p.index)
    assert sum(len(s) for s in shares) == len(whole)
    # Each group (batch or step) is split as evenly as possible and keeps its instant.
    for group in {p.group for p in whole}:
        offsets = {p.offset for p in whole if p.group == group}
        sizes = [sum(1 for p in share if p.group == group) for share in shares]
        assert max(sizes) - min(sizes) <= 1
        for share in shares:
            assert {p.offset for p in share if p.group == group} <= offsets
    # Replicas never exceed their share by more than one connection overall.
    lengths = [len(s) for s in shares]
    assert max(lengths) - min(lengths) <= 1


def test_resolve_shard_from_config_or_hostname() -> None:
    """The index comes from the config, else from the ordinal that ends the host name."""
    assert resolve_shard(ShardingConfig(), "anything") == Shard(0, 1)
    assert resolve_shard(ShardingConfig(replicas=4, index=2), "x") == Shard(2, 4)
    assert resolve_shard(ShardingConfig(replicas=4), "spikewatch-3") == Shard(3, 4)
    with pytest.raises(ConfigError, match=r"sharding\.index: not set"):
        resolve_shard(ShardingConfig(replicas=4), "laptop")
    with pytest.raises(ConfigError, match=r"not less than sharding\.replicas"):
        resolve_shard(ShardingConfig(replicas=4), "spikewatch-4")


def test_aligned_slot_names_the_same_slot_for_early_and_late_fires() -> None:
    """A fire a little early or late belongs to the nearest slot: all replicas agree."""
    every = ScheduleConfig(every=60)
    cron = ScheduleConfig(cron="*/5 * * * *")
    assert aligned_slot(1_800_000_000.02, every) == 1_800_000_000
    assert aligned_slot(1_799_999_999.97, every) == 1_800_000_000
    assert aligned_slot(1_800_000_300.4, cron) == 1_800_000_300


def test_aligned_interval_trigger_fires_on_multiples_of_every_since_the_epoch() -> None:
    """Aligned interval schedules fire at multiples of `every`, the same on every replica."""
    trigger = build_trigger(ScheduleConfig(every=90), aligned=True)
    now = datetime.now(UTC)
    fire = trigger.get_next_fire_time(None, now)
    assert fire is not None
    assert fire.timestamp() % 90 == pytest.approx(0, abs=1e-6)
    assert 0 <= (fire - now).total_seconds() <= 90


def test_spike_delay_default_covers_the_baseline() -> None:
    """The spike starts after the baseline plus a margin, or at the configured delay."""
    scenario = scenario_of(
        {"spike": {"connections": 4}, "baseline": {"probes": 4, "interval": "500ms"}}
    )
    assert spike_delay(ShardingConfig(replicas=2), scenario) == pytest.approx(4.0)
    assert spike_delay(ShardingConfig(replicas=2, spike_delay=7), scenario) == 7


def test_config_rejects_jitter_and_too_small_spikes_with_sharding() -> None:
    """Sharding needs jitter 0 and at least one connection per replica."""
    with pytest.raises(ConfigError, match=r"scenarios\[0\]\.schedule\.jitter"):
        config(
            {"spike": {"connections": 10}, "schedule": {"every": "1m", "jitter": "5s"}},
            sharding={"replicas": 2},
        )
    with pytest.raises(ConfigError, match=r"fewer than sharding\.replicas"):
        config({"spike": {"connections": 3}}, sharding={"replicas": 4})
    with pytest.raises(ConfigError, match=r"sharding\.index: must be less than replicas"):
        config({"spike": {"connections": 30}}, sharding={"replicas": 2, "index": 2})


async def test_two_replicas_fire_their_shares_at_the_same_instant() -> None:
    """Two replicas with one spike instant: together they open the whole spike, in step."""
    async with await start_reference_target(TargetBehaviour()) as target:
        cfg = parse_config(
            {
                "targets": [{"name": "t", "url": target.url}],
                "scenarios": [
                    {
                        "name": "s",
                        "spike": {"connections": 21, "batches": 3, "batch_interval": "100ms"},
                        "baseline": {"probes": 2, "interval": "20ms"},
                        "recovery": {
                            "probe_interval": "50ms",
                            "timeout": "3s",
                            "tolerance": 1.0,
                            "slack": "20ms",
                        },
                    }
                ],
            }
        )
        t, s = cfg.pairs()[0]
        spike_at = time.time() + 0.5

        def prober() -> Prober:
            return Prober(
                ConnectionRegistry(100),
                ProberMonitor(interval=0.02),
                ProberLimits(max_loop_lag_p99=1, max_start_lateness_p99=1, max_cpu_percent=1000),
            )

        reports = await asyncio.gather(
            *(execute_run(t, s, prober(), share=(i, 2), spike_at=spike_at) for i in range(2))
        )
    spikes = [[a for a in r.attempts if a.phase == Phase.SPIKE] for r in reports]
    assert [len(x) for x in spikes] == [11, 10]
    assert all(
        r.result.spike is not None and r.result.spike.outcomes == {"ok": len(x)}
        for r, x in zip(reports, spikes, strict=True)
    )
    # Both replicas' spikes start at the shared wall-clock instant, batches 100 ms apart.
    for report, attempts in zip(reports, spikes, strict=True):
        start = report.result.started_at + report.result.timeline["spike_start"]
        assert start == pytest.approx(spike_at, abs=0.01)
        first = min(a.planned for a in attempts if a.planned is not None)
        offsets = sorted({round(a.planned - first, 6) for a in attempts if a.planned})
        assert offsets == [0.0, 0.1, 0.2]
