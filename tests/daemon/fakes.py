"""A hand-written DaemonState for tests of the HTTP layer (and anything else built on it).

    state = FakeDaemonState()                 # the config below, token API_TOKEN, ready
    state.history.add(finished_run(...))      # a real RunHistory
    state.run_error = QueueFullError("...")   # the next request_run raises it
    state.reload_problems = [ConfigProblem("targets[0].url", "...")]

It records what it was asked: ``run_requests``, ``reloads``, ``metrics_accepts``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder

from spikewatch.config import SpikewatchConfig, parse_config
from spikewatch.core.outcomes import RunResultKind
from spikewatch.core.result import (
    BaselineSummary,
    ProberReport,
    RecoverySummary,
    RunResult,
    SpikeSummary,
)
from spikewatch.core.stats import LatencySummary
from spikewatch.daemon.history import RunEntry, RunHistory
from spikewatch.daemon.state import (
    AlreadyQueuedError,
    RunRequestError,
    ScheduledPair,
    UnknownPairError,
)
from spikewatch.daemon.status_page import render_status_page
from spikewatch.errors import ConfigProblem

#: Secrets planted in the default config: no answer may ever contain them.
JWT_SECRET: Final = "jwt-secret-0f9e8d7c6b5a49382716"
API_TOKEN: Final = "api-token-a1b2c3d4e5f60718293a"
#: A static credential in a target's URL query: shown masked, never in clear.
QUERY_TOKEN: Final = "query-token-5e4d3c2b1a"
#: A credential in a plain header: named, never shown.
HEADER_SECRET: Final = "header-secret-77aa88bb99"
SECRETS: Final = (JWT_SECRET, API_TOKEN, QUERY_TOKEN, HEADER_SECRET)

#: A fixed wall clock (2026-11-24T10:00:00Z) so times in answers are predictable.
NOW: Final = 1795514400.0


def config_data(*, api_token: str | None = API_TOKEN) -> dict[str, Any]:
    """Return a config mapping: two targets (one with JWT auth), a spike and a ramp."""
    server: dict[str, Any] = {"listen": "127.0.0.1:0"}
    if api_token is not None:
        server["api_token"] = api_token
    return {
        "server": server,
        "targets": [
            {
                "name": "chat-staging",
                "url": f"wss://staging.example.com/ws/test?room=1&token={QUERY_TOKEN}",
                "headers": {"X-Api-Key": HEADER_SECRET, "X-Client": "spikewatch"},
                "subprotocols": ["chat.v1"],
                "handshake_timeout": "5s",
                "welcome": {"match": "welcome", "timeout": "2s"},
                "echo": {"payload": "ping {seq}", "match": "ping", "timeout": "1s"},
                "auth": {
                    "jwt": {
                        "secret": JWT_SECRET,
                        "algorithm": "HS256",
                        "claims": {"sub": "spikewatch-{conn}"},
                    }
                },
            },
            {"name": "echo-local", "url": "ws://127.0.0.1:8765/ws"},
        ],
        "scenarios": [
            {
                "name": "avalanche",
                "schedule": {"every": "15m", "jitter": "30s"},
                "spike": {"connections": 25, "batches": 3, "batch_interval": "1s"},
                "stable": {"connections": 2, "ping_interval": "1s"},
                "thresholds": {"success_ratio": 0.99, "recovery": "60s"},
            },
            {
                "name": "ramp",
                "targets": ["echo-local"],
                "schedule": {"cron": "*/30 * * * *", "timezone": "Europe/Paris"},
                "ramp": {"steps": [5, 10, 15], "step_interval": "10s"},
            },
        ],
    }


def make_config(*, api_token: str | None = API_TOKEN) -> SpikewatchConfig:
    """Return the default test config, validated by the real loader."""
    return parse_config(config_data(api_token=api_token), source="tests/daemon/fakes.py")


def finished_result(
    target: str = "chat-staging",
    scenario: str = "avalanche",
    *,
    run_id: str = "run-done",
    result: RunResultKind = RunResultKind.PASSED,
    started_at: float = NOW - 120.0,
    duration: float = 12.5,
    ok: int = 24,
    attempted: int = 25,
    recovery_seconds: float | None = 1.5,
    message: str = "",
) -> RunResult:
    """Return a finished run's result, realistic enough for every field the API shows."""
    handshake = LatencySummary(count=attempted, p50=0.01, p95=0.05, p99=0.08, max=0.09)
    outcomes = {"ok": ok, "timeout": attempted - ok} if attempted > ok else {"ok": ok}
    return RunResult(
        id=run_id,
        target=target,
        scenario=scenario,
        result=result,
        started_at=started_at,
        duration=duration,
        baseline=BaselineSummary(probes=5, ok=5, outcomes={"ok": 5}, latency=0.004),
        spike=SpikeSummary(
            attempted=attempted,
            outcomes=outcomes,
            handshake=handshake,
            first_message=None,
            message_rtt=None,
            start_lateness=None,
        ),
        stable=None,
        recovery=RecoverySummary(
            recovered=recovery_seconds is not None,
            seconds=recovery_seconds,
            probes=7,
            outcomes={"ok": 7},
            good_limit=0.01,
            timeout=120.0,
        ),
        thresholds=(),
        prober=ProberReport(saturated=False, loop_lag_p99=0.001, cpu_percent=35.0, rss_bytes=1),
        errors=(),
        message=message,
        upgrade_statuses={"503": 1},
        timeline={"t0": 3.0},
    )


def finished_run(result: RunResult, *, trigger: str = "schedule") -> RunEntry:
    """Return a history entry holding a finished result."""
    assert trigger in ("schedule", "api")
    return RunEntry(
        id=result.id,
        target=result.target,
        scenario=result.scenario,
        trigger="api" if trigger == "api" else "schedule",
        queued_at=result.started_at,
        state="done",
        started_at=result.started_at,
        result=result,
    )


class FakeDaemonState:
    """A DaemonState whose every answer a test can set, recording what it was asked."""

    def __init__(
        self,
        config: SpikewatchConfig | None = None,
        *,
        token: str | None = API_TOKEN,
        ready: bool = True,
        capacity: int = 200,
    ) -> None:
        self.config = config if config is not None else make_config()
        self.ready = ready
        self.history = RunHistory(capacity)
        #: The bearer token POSTs need; None: POST endpoints disabled.
        self.token = token
        #: What the next reload returns (and the calls: ``reloads``).
        self.reload_problems: list[ConfigProblem] = []
        self.reloads = 0
        #: Raised by the next request_run instead of queueing, when set.
        self.run_error: RunRequestError | None = None
        self.run_requests: list[tuple[str, str]] = []
        #: Next run times by (target, scenario); missing: not scheduled.
        self.next_runs: dict[tuple[str, str], float] = {}
        self.metrics_accepts: list[str | None] = []
        self._ids = itertools.count(1)
        self.registry = CollectorRegistry()
        build = Gauge(
            "spikewatch_build_info", "spikewatch build", ["version"], registry=self.registry
        )
        build.labels(version="test").set(1)

    def schedules(self) -> list[ScheduledPair]:
        """Return every configured pair, its state derived from the history."""
        pairs = []
        for target, scenario in self.config.pairs():
            key = (target.name, scenario.name)
            schedule = scenario.schedule
            text = (
                f"cron {schedule.cron} ({schedule.timezone})"
                if schedule.cron is not None
                else f"every {schedule.every:g}s ± {schedule.jitter:g}s"
            )
            pairs.append(
                ScheduledPair(
                    target=target.name,
                    scenario=scenario.name,
                    schedule=text,
                    next_run=self.next_runs.get(key),
                    state=self._pair_state(*key),
                    last=self.history.last_result(*key),
                )
            )
        return pairs

    def _pair_state(self, target: str, scenario: str) -> str:
        for entry in self.history.recent(target=target, scenario=scenario, limit=1_000_000):
            if entry.state != "done":
                return entry.state
        return "idle"

    def request_run(self, target: str, scenario: str) -> RunEntry:
        """Queue a run in the history, or raise ``run_error`` / what the real one would."""
        self.run_requests.append((target, scenario))
        if self.run_error is not None:
            raise self.run_error
        known = {(t.name, s.name) for t, s in self.config.pairs()}
        if (target, scenario) not in known:
            raise UnknownPairError(f"no scenario {scenario!r} for target {target!r}")
        if self._pair_state(target, scenario) != "idle":
            raise AlreadyQueuedError(f"{scenario} on {target} is already queued or running")
        entry = RunEntry(
            id=f"run-{next(self._ids)}",
            target=target,
            scenario=scenario,
            trigger="api",
            queued_at=NOW,
        )
        self.history.add(entry)
        return entry

    async def reload(self) -> list[ConfigProblem]:
        """Count the reload and return ``reload_problems``."""
        self.reloads += 1
        return list(self.reload_problems)

    def api_token(self) -> str | None:
        """Return ``token``."""
        return self.token

    async def render_metrics(self, accept: str | None) -> tuple[Sequence[bytes], str]:
        """Render the fake's own registry with prometheus_client's real content negotiation.

        In two parts, split at a line, as the daemon writes its body.
        """
        self.metrics_accepts.append(accept)
        encoder, content_type = choose_encoder(accept or "")
        body = encoder(self.registry)
        cut = body.find(b"\n", len(body) // 2) + 1
        return (body[:cut], body[cut:]), content_type


def status_page(state: FakeDaemonState, version: str = "9.9") -> str:
    """Render the status page of ``state``'s pairs and recent runs at NOW, ready, no URLs."""
    return render_status_page(
        version=version,
        ready=True,
        pairs=state.schedules(),
        runs=state.history.recent(),
        target_urls={},
        now=NOW,
    )


def as_mapping(value: object) -> Mapping[str, Any]:
    """Narrow a decoded JSON value to an object, for tests."""
    assert isinstance(value, dict)
    return value
