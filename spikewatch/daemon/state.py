"""What the HTTP layer needs from the daemon, as a Protocol (tests hand in a fake)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from spikewatch.config import SpikewatchConfig
from spikewatch.core.result import RunResult
from spikewatch.daemon.history import RunEntry, RunHistory
from spikewatch.errors import ConfigProblem, SpikewatchError


class RunRequestError(SpikewatchError):
    """A run cannot be requested now; ``status`` is the HTTP status that says why."""

    status = 400


class UnknownPairError(RunRequestError):
    """No such target, scenario, or the scenario does not apply to the target."""

    status = 404


class AlreadyQueuedError(RunRequestError):
    """This target/scenario pair is already running or queued."""

    status = 409


class QueueFullError(RunRequestError):
    """The run queue is full."""

    status = 429


@dataclass(frozen=True, slots=True)
class ScheduledPair:
    """One target-scenario pair as the scheduler sees it now."""

    target: str
    scenario: str
    schedule: str
    next_run: float | None
    state: str  # "idle", "queued" or "running"
    last: RunResult | None


class DaemonState(Protocol):
    """The daemon as the HTTP API sees it."""

    @property
    def config(self) -> SpikewatchConfig:
        """The config in force now."""

    @property
    def ready(self) -> bool:
        """Config loaded and scheduler up."""

    @property
    def history(self) -> RunHistory:
        """Recent runs."""

    def schedules(self) -> list[ScheduledPair]:
        """Every target-scenario pair with its schedule, next run and last result."""

    def request_run(self, target: str, scenario: str) -> RunEntry:
        """Queue a run now; raise a :class:`RunRequestError` subclass when it cannot be."""

    async def reload(self) -> list[ConfigProblem]:
        """Reload the config file; return its problems (empty when it was applied)."""

    def api_token(self) -> str | None:
        """The bearer token POST endpoints require, or None when none is configured."""

    async def render_metrics(self, accept: str | None) -> tuple[Sequence[bytes], str]:
        """The metrics exposition, in parts to write in order, and its content type."""
