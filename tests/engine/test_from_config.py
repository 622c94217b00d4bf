"""The engine's long-lived objects, built from the config in one place each."""

from __future__ import annotations

from typing import Any

from spikewatch.config import SpikewatchConfig, parse_config
from spikewatch.engine.from_config import make_prober, prober_monitor, worker_pool
from spikewatch.engine.registry import ConnectionRegistry


def config(**prober: Any) -> SpikewatchConfig:
    return parse_config(
        {
            "targets": [{"name": "t", "url": "ws://127.0.0.1:9/"}],
            "scenarios": [{"name": "s", "spike": {"connections": 1}}],
            "limits": {"max_connections": 30},
            "prober": prober,
        }
    )


async def test_monitor_samples_at_the_configured_cadences() -> None:
    """The monitor samples at lag_sample_interval in a run, idle_lag_sample_interval between."""
    cfg = config(lag_sample_interval="10ms", idle_lag_sample_interval="500ms")
    monitor = prober_monitor(cfg.prober)
    assert monitor.sampling_interval == 0.5
    monitor.start()
    try:
        assert monitor.sampling_interval == 0.01
    finally:
        monitor.stop()


def test_one_worker_means_no_pool_and_more_mean_a_pool_not_started() -> None:
    """workers: 1 fires from the daemon's own loop; N > 1 gets a pool of N, not yet started."""
    assert worker_pool(config().prober) is None
    pool = worker_pool(config(workers=3, lag_sample_interval="40ms", event_loop="asyncio").prober)
    assert pool is not None
    assert (pool.size, pool.lag_interval) == (3, 0.04)
    assert not any(w.alive for w in pool.workers)


def test_prober_gets_the_configured_limits_and_builds_what_it_is_not_given() -> None:
    """make_prober builds registry and monitor from the config unless handed the daemon's."""
    cfg = config(max_cpu_percent=80)
    prober = make_prober(cfg)
    assert prober.limits == cfg.prober.limits()
    assert prober.registry.limit == 30
    assert prober.pool is None
    registry = ConnectionRegistry(5)
    monitor = prober_monitor(cfg.prober)
    shared = make_prober(cfg, registry=registry, monitor=monitor)
    assert (shared.registry, shared.monitor) == (registry, monitor)
