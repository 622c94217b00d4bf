"""The one home of what tests share: config documents and files, probers, a fake clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spikewatch.config import SpikewatchConfig, load_config
from spikewatch.core.saturation import ProberLimits
from spikewatch.engine.prober_monitor import ProberMonitor
from spikewatch.engine.registry import ConnectionRegistry
from spikewatch.engine.runner import Prober
from spikewatch.engine.worker_pool import WorkerPool
from spikewatch.protocol.receive_budget import DEFAULT_RECEIVE_BUDGET_BYTES

#: What the reference target's welcome message matches.
WELCOME = r'"type":\s*"welcome"'


#: The epoch a :class:`FakeClock` reads as its monotonic zero.
EPOCH = 1_700_000_000.0


class FakeClock:
    """A monotonic clock that moves only when told to; ``wall`` is its epoch reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as a YAML config file at ``path``; return the path."""
    path.write_text(yaml.safe_dump(dict(document)))
    return path


def reference_target(url: str, name: str = "ref") -> dict[str, Any]:
    """Return a target entry for the reference target at ``url`` (its welcome awaited)."""
    return {"name": name, "url": url, "welcome": {"match": WELCOME}}


def daemon_document(
    targets: list[dict[str, Any]],
    *,
    token_file: Path | None = None,
    listen: str = "127.0.0.1:0",
    log: Mapping[str, str] | None = None,
    every: str = "1s",
    spike: Mapping[str, Any] | None = None,
    tolerance: float = 1.0,
    prober: Mapping[str, Any] | None = None,
    **scenario: Any,
) -> dict[str, Any]:
    """Return a daemon's config: ``targets`` and one quick scenario "quick" every ``every``;
    ``scenario`` adds to it or overrides (``hold``, say)."""
    server: dict[str, Any] = {"listen": listen}
    if token_file is not None:
        server["api_token_file"] = str(token_file)
    document: dict[str, Any] = {
        "server": server,
        "log": dict(log or {"format": "text", "level": "info"}),
    }
    if prober is not None:
        document["prober"] = dict(prober)
    document["targets"] = targets
    document["scenarios"] = [
        {
            "name": "quick",
            "schedule": {"every": every},
            "spike": dict(spike or {"connections": 10}),
            "baseline": {"probes": 2, "interval": "50ms"},
            "recovery": {
                "probe_interval": "100ms",
                "timeout": "5s",
                "tolerance": tolerance,
                "slack": "20ms",
            },
            "thresholds": {"success_ratio": 0.9},
            **scenario,
        }
    ]
    return document


@dataclass(frozen=True)
class RunConfigs:
    """Configs of one target "t" and one scenario "s" for running in-process, over a test
    module's defaults: ``configs(tmp_path, url, scenario, **target)``."""

    target: Mapping[str, Any]
    scenario: Mapping[str, Any]
    #: Other sections of the document (``prober``, say).
    sections: Mapping[str, Any] = field(default_factory=dict)
    #: Files written next to the config (a JWT secret, say): name → text.
    files: Mapping[str, str] = field(default_factory=dict)

    def __call__(
        self, tmp_path: Path, url: str, scenario: Mapping[str, Any], **target: Any
    ) -> SpikewatchConfig:
        """Write and load the config: ``scenario`` and ``target`` override the defaults."""
        for name, text in self.files.items():
            (tmp_path / name).write_text(text)
        document = {
            **self.sections,
            "targets": [{"name": "t", "url": url, **self.target, **target}],
            "scenarios": [{"name": "s", **self.scenario, **scenario}],
        }
        return load_config(write_config(tmp_path / "config.yaml", document))


def make_prober(
    limit: int = 2000,
    *,
    pool: WorkerPool | None = None,
    lag: float = 1.0,
    lateness: float = 1.0,
    cpu: float = 1000.0,
    receive_budget_bytes: int = DEFAULT_RECEIVE_BUDGET_BYTES,
) -> Prober:
    """Return a prober with ``limit`` connection slots, lenient saturation limits and
    (with ``pool``) worker processes."""
    return Prober(
        registry=ConnectionRegistry(limit, receive_budget_bytes=receive_budget_bytes),
        monitor=ProberMonitor(interval=0.02),
        limits=ProberLimits(
            max_loop_lag_p99=lag, max_start_lateness_p99=lateness, max_cpu_percent=cpu
        ),
        pool=pool,
    )
