"""The engine's long-lived objects, each built from the config in one place.

``spikewatch once``, the daemon, the benchmarks and the tests build the prober, its
monitor and its worker pool here, so that a new ``prober.*`` field is wired once. The
core's values come from the config sections themselves (``ProberConfig.limits()``,
``ThresholdsConfig.limits()``): the config may import the core, and the core imports
nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spikewatch.config.render import secret_values
from spikewatch.core.redact import Redactor
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import Prober
from spikewatch.engine.worker_pool import WorkerPool

if TYPE_CHECKING:
    from spikewatch.config import ProberConfig, SpikewatchConfig

__all__ = ["make_prober", "prober_monitor", "worker_pool"]


def prober_monitor(
    prober: ProberConfig, *, on_lag: Callable[[float], None] | None = None
) -> ProberMonitor:
    """Return the monitor of the prober's own health, sampling at the configured cadences."""
    return ProberMonitor(
        interval=prober.lag_sample_interval,
        idle_interval=prober.idle_lag_sample_interval,
        on_lag=on_lag,
    )


def worker_pool(prober: ProberConfig) -> WorkerPool | None:
    """Return the worker processes that fire spikes (not started), or None for ``workers: 1``."""
    if prober.workers == 1:
        return None
    return WorkerPool(
        prober.workers, lag_interval=prober.lag_sample_interval, event_loop=prober.event_loop
    )


def make_prober(
    config: SpikewatchConfig,
    *,
    registry: ConnectionRegistry | None = None,
    monitor: ProberMonitor | None = None,
    pool: WorkerPool | None = None,
) -> Prober:
    """Return what every run shares, with a new registry and monitor unless given.

    The daemon hands in its long-lived registry, monitor and pool, and builds a new
    prober on each reload (the limits may have changed); ``spikewatch once`` builds
    everything afresh. Its redactor masks the config's secrets, and every JWT, in what
    the targets say (:mod:`spikewatch.core.redact`).
    """
    if registry is None:
        registry = connection_registry(config)
    if monitor is None:
        monitor = prober_monitor(config.prober)
    redact = Redactor(secret_values(config))
    return Prober(registry, monitor, config.prober.limits(), pool=pool, redact=redact)


def connection_registry(config: SpikewatchConfig) -> ConnectionRegistry:
    """Return the registry that enforces ``limits``: connections, and receive buffers."""
    limits = config.limits
    return ConnectionRegistry(
        limits.max_connections, receive_budget_bytes=limits.max_receive_buffer_bytes
    )
