"""The ``scenarios`` section: shapes of load and the rules to judge them."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from pydantic import BeforeValidator, Field, field_validator, model_validator

from spikewatch.config.durations import Duration, PositiveDuration
from spikewatch.config.fields import ConfigSection, Name, Ratio
from spikewatch.config.problems import Problems, invalid
from spikewatch.core.verdict import ThresholdLimits

__all__ = [
    "DEFAULT_EVERY",
    "AbortConfig",
    "BaselineConfig",
    "RampConfig",
    "RecoveryConfig",
    "ScenarioConfig",
    "ScheduleConfig",
    "SpikeConfig",
    "StableConfig",
    "ThresholdsConfig",
]

DEFAULT_EVERY: Final = 15 * 60.0


class ScheduleConfig(ConfigSection):
    """When a scenario runs: every so often, or on a cron schedule."""

    every: PositiveDuration | None = None
    #: Each run starts up to this much later than due, at random.
    jitter: Duration = 0.0
    cron: str | None = None
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _default_every(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("every") is None and data.get("cron") is None:
            return {**data, "every": DEFAULT_EVERY}
        return data

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"is not a valid cron expression: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("is not a known time zone, like UTC or Europe/Paris") from None
        return value

    @model_validator(mode="after")
    def _check_choice(self) -> Self:
        if self.every is not None and self.cron is not None:
            raise invalid([("", "set every or cron, not both")])
        if self.every is not None and self.jitter >= self.every:
            raise invalid([("jitter", "must be less than every")])
        return self

    @property
    def tzinfo(self) -> ZoneInfo:
        """Return the time zone that cron expressions are read in."""
        return ZoneInfo(self.timezone)


class SpikeConfig(ConfigSection):
    """Open ``connections`` in ``batches``, each batch at once, ``batch_interval`` apart."""

    connections: int = Field(ge=1)
    batches: int = Field(default=1, ge=1)
    batch_interval: Duration = 0.0

    @model_validator(mode="after")
    def _check_batches(self) -> Self:
        if self.batches > self.connections:
            raise invalid([("batches", f"must be ≤ connections ({self.connections})")])
        return self

    @property
    def total_connections(self) -> int:
        """Return how many spike connections open in all."""
        return self.connections


class RampConfig(ConfigSection):
    """Open ``steps[i]`` connections per step, ``step_interval`` apart."""

    steps: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1)
    step_interval: Duration

    @property
    def total_connections(self) -> int:
        """Return how many ramp connections open in all."""
        return sum(self.steps)


def _message_is_echo(value: object) -> object:
    return "echo" if value == "message" else value


class StableConfig(ConfigSection):
    """Connections opened before the spike and kept busy through it."""

    connections: int = Field(ge=1)
    ping_interval: PositiveDuration = 1.0
    #: auto: the target's keepalive, else its echo, else a WebSocket ping; echo (or its
    #: clearer alias message, read as echo): the keepalive, else the echo; ping: a
    #: WebSocket ping.
    mode: Annotated[Literal["auto", "ping", "echo"], BeforeValidator(_message_is_echo)] = "auto"
    #: How long a ping or echo may go unanswered before the connection counts as lost.
    timeout: PositiveDuration = 5.0


class BaselineConfig(ConfigSection):
    """Probes before the spike; their median latency is B."""

    probes: int = Field(default=5, ge=1)
    interval: Duration = 0.5


class RecoveryConfig(ConfigSection):
    """Probing after the spike, and what counts as recovered."""

    probe_interval: PositiveDuration = 0.5
    consecutive: int = Field(default=3, ge=1)
    tolerance: float = Field(default=0.2, ge=0)
    slack: Duration = 0.005
    timeout: PositiveDuration = 120.0


class ThresholdsConfig(ConfigSection):
    """Limits a run must meet to pass; None: not checked."""

    success_ratio: Ratio | None = None
    handshake_p95: Duration | None = None
    first_message_p95: Duration | None = None
    message_rtt_p95: Duration | None = None
    recovery: Duration | None = None
    dropped_stable: Annotated[int, Field(ge=0)] | None = None
    #: Spike connections held through ``hold`` that the target may drop.
    dropped_held: Annotated[int, Field(ge=0)] | None = None

    def limits(self) -> ThresholdLimits:
        """Return the thresholds as the verdict checks them."""
        return ThresholdLimits(
            success_ratio=self.success_ratio,
            handshake_p95=self.handshake_p95,
            first_message_p95=self.first_message_p95,
            message_rtt_p95=self.message_rtt_p95,
            recovery=self.recovery,
            dropped_stable=self.dropped_stable,
            dropped_held=self.dropped_held,
        )


class AbortConfig(ConfigSection):
    """When to stop opening spike connections."""

    #: Stop once this share of finished attempts failed; None: never.
    error_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    #: Judge the failures only after this many attempts finished.
    min_attempts: int = Field(default=10, ge=1)


class ScenarioConfig(ConfigSection):
    """A shape of load and the rules to judge it."""

    name: Name
    #: None: every target.
    targets: Annotated[tuple[Name, ...], Field(min_length=1)] | None = None
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    spike: SpikeConfig | None = None
    ramp: RampConfig | None = None
    hold: Duration = 0.0
    stable: StableConfig | None = None
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    abort: AbortConfig = Field(default_factory=AbortConfig)
    #: The whole run's deadline; None: the engine computes one.
    timeout: PositiveDuration | None = None

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            repeated = [(f"[{i}]", f"repeats {n!r}") for i, n in enumerate(value) if n in value[:i]]
            if repeated:
                raise invalid(repeated)
        return value

    @model_validator(mode="after")
    def _check_scenario(self) -> Self:
        problems: Problems = []
        if self.spike is not None and self.ramp is not None:
            problems.append(("", "set spike or ramp, not both"))
        elif self.spike is None and self.ramp is None:
            problems.append(("", "needs spike or ramp"))
        if self.thresholds.dropped_stable is not None and self.stable is None:
            problems.append(("thresholds.dropped_stable", "needs stable connections"))
        if problems:
            raise invalid(problems)
        return self

    @property
    def load(self) -> SpikeConfig | RampConfig:
        """Return the spike or the ramp, whichever is set."""
        if self.spike is not None:
            return self.spike
        assert self.ramp is not None  # the validator guarantees one of them
        return self.ramp

    @property
    def total_connections(self) -> int:
        """Return how many connections a run holds open at its peak: spike or ramp, and stable."""
        stable = self.stable.connections if self.stable is not None else 0
        return self.load.total_connections + stable
