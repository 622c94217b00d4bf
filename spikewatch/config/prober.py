"""The ``limits``, ``prober`` and ``sharding`` sections: how much the prober may do, and where."""

from __future__ import annotations

from typing import Annotated, Final, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection, lower_text
from spikewatch.config.problems import invalid
from spikewatch.core.event_loop_choice import EventLoopChoice, uvloop_available
from spikewatch.core.saturation import ProberLimits

__all__ = ["MAX_WORKERS", "LimitsConfig", "ProberConfig", "ShardingConfig"]

#: More worker processes than this would only contend for the same cores.
MAX_WORKERS: Final = 64


class LimitsConfig(ConfigSection):
    """Safety limits over all runs together."""

    max_connections: int = Field(default=2000, ge=1)
    max_concurrent_runs: int = Field(default=1, ge=1)
    #: The bytes all connections together may hold in messages not yet complete; past it
    #: an attempt is the prober's ``error`` and the run ``invalid`` (issue 12).
    max_receive_buffer_bytes: int = Field(default=64 * 1024 * 1024, ge=65536)


class ProberConfig(ConfigSection):
    """The prober's own limits: past them a run is ``invalid``, not the target's fault."""

    max_loop_lag_p99: PositiveDuration = 0.1
    max_start_lateness_p99: PositiveDuration = 0.25
    #: Percent of one core.
    max_cpu_percent: float = Field(default=95.0, gt=0)
    lag_sample_interval: PositiveDuration = 0.02
    #: The daemon's loop-lag sampling between runs (``lag_sample_interval`` during them):
    #: each sample wakes the process, and 50 wake-ups a second were most of its idle CPU.
    idle_lag_sample_interval: PositiveDuration = 0.25
    #: Processes a spike is spread over: 1 fires it from the daemon's own event loop;
    #: N > 1 starts N worker processes that each fire a round-robin share of it, so that
    #: a spike can use N cores (baseline, stable, recovery and the verdict stay here).
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    #: The event loop: ``auto`` is uvloop when installed (the default install has it),
    #: else asyncio's; ``uvloop`` refuses to start without it. Read at start only.
    event_loop: Annotated[EventLoopChoice, BeforeValidator(lower_text)] = "auto"

    @field_validator("event_loop")
    @classmethod
    def _loop_available(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop" and not uvloop_available():
            raise PydanticCustomError(
                "uvloop_missing", "uvloop is not installed here; install it or choose asyncio"
            )
        return value

    @model_validator(mode="after")
    def _check_idle_interval(self) -> Self:
        if self.idle_lag_sample_interval < self.lag_sample_interval:
            raise invalid(
                [
                    (
                        "idle_lag_sample_interval",
                        f"must be ≥ lag_sample_interval ({self.lag_sample_interval:g}s)",
                    )
                ]
            )
        return self

    def limits(self) -> ProberLimits:
        """Return the limits past which a run's figures describe the prober, not the target."""
        return ProberLimits(
            max_loop_lag_p99=self.max_loop_lag_p99,
            max_start_lateness_p99=self.max_start_lateness_p99,
            max_cpu_percent=self.max_cpu_percent,
        )


class ShardingConfig(ConfigSection):
    """Scale-out: N replicas each fire 1/N of every spike at the same instant.

    See deploy/README.md for the model and its limits.
    """

    replicas: int = Field(default=1, ge=1)
    #: This replica, 0 ≤ index < replicas. Unset: the ordinal that ends $HOSTNAME
    #: (a StatefulSet's ``spikewatch-3`` is 3).
    index: int | None = Field(default=None, ge=0)
    #: How long after the scheduled instant every replica's spike starts. Unset: the
    #: scenario's baseline time plus 2 s (3 s with stable connections).
    spike_delay: PositiveDuration | None = None

    @model_validator(mode="after")
    def _check_index(self) -> Self:
        if self.index is not None and self.index >= self.replicas:
            raise invalid([("index", f"must be less than replicas ({self.replicas})")])
        return self

    @property
    def enabled(self) -> bool:
        """Whether spikes are shared between several replicas."""
        return self.replicas > 1
