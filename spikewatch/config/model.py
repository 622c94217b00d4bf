"""The config as one frozen pydantic model: the root, :class:`SpikewatchConfig`.

Its sections live in modules of their own, one per part of the YAML file (``server``,
``prober``, ``targets`` with ``auth``, ``scenarios``); their names are importable from here
too. Validation is pure: it never touches the file system. Reading the files that the
config names (the API token, JWT keys, TLS files) is the loader's job, once the shape of
the config is known to be right.

The root is a pydantic-settings ``BaseSettings``: the loader builds it from
pydantic-settings sources (the environment over the YAML file).
"""

from __future__ import annotations

import logging
from typing import Any, Final, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spikewatch.config.auth import AuthConfig, JwtAlgorithm, JwtConfig, is_pem_private_key
from spikewatch.config.fields import ConfigSection
from spikewatch.config.prober import MAX_WORKERS, LimitsConfig, ProberConfig, ShardingConfig
from spikewatch.config.problems import PROBLEMS_ERROR_TYPE, Problems, invalid, path_key
from spikewatch.config.scenario import (
    DEFAULT_EVERY,
    AbortConfig,
    BaselineConfig,
    RampConfig,
    RecoveryConfig,
    ScenarioConfig,
    ScheduleConfig,
    SpikeConfig,
    StableConfig,
    ThresholdsConfig,
)
from spikewatch.config.server import LogConfig, ServerConfig
from spikewatch.config.storage import RetentionConfig, StorageConfig
from spikewatch.config.target import EchoConfig, TargetConfig, TlsConfig, WelcomeConfig
from spikewatch.core.budget import PROBE_RESERVE

__all__ = [
    "DEFAULT_EVERY",
    "ENV_PREFIX",
    "MAX_WORKERS",
    "PROBLEMS_ERROR_TYPE",
    "AbortConfig",
    "AuthConfig",
    "BaselineConfig",
    "ConfigSection",
    "EchoConfig",
    "JwtAlgorithm",
    "JwtConfig",
    "LimitsConfig",
    "LogConfig",
    "ProberConfig",
    "RampConfig",
    "RecoveryConfig",
    "RetentionConfig",
    "ScenarioConfig",
    "ScheduleConfig",
    "ServerConfig",
    "ShardingConfig",
    "SpikeConfig",
    "SpikewatchConfig",
    "StableConfig",
    "StorageConfig",
    "TargetConfig",
    "ThresholdsConfig",
    "TlsConfig",
    "WelcomeConfig",
    "is_pem_private_key",
    "path_key",
]

#: Starts the name of every environment variable that overrides the config.
ENV_PREFIX: Final = "SPIKEWATCH_"


class SpikewatchConfig(BaseSettings):
    """The whole config."""

    model_config = SettingsConfigDict(
        # What the loader's environment source reads: SPIKEWATCH_LIMITS__MAX_CONNECTIONS.
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # For the init kwargs: pydantic-settings would otherwise take Limits= for limits=,
        # where the model has always said "unknown field". Environment names still match
        # in any case: the loader's environment source asks the library for that.
        case_sensitive=True,
        # As for every other section (see ConfigSection).
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    prober: ProberConfig = Field(default_factory=ProberConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    sharding: ShardingConfig = Field(default_factory=ShardingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    targets: tuple[TargetConfig, ...] = Field(min_length=1)
    scenarios: tuple[ScenarioConfig, ...] = Field(min_length=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Return the init kwargs only: outside the loader the model never reads the environment.

        ``SpikewatchConfig(...)`` and ``model_validate`` (which pydantic routes through
        ``BaseSettings.__init__``) see their arguments only. The loader builds its sources
        itself (the environment over the YAML file, see :mod:`spikewatch.config.loader`) and
        hands them in with pydantic-settings' ``_build_sources``, which bypasses this hook.
        """
        return (init_settings,)

    @classmethod
    def _settings_log_debug(cls, states: dict[str, dict[str, Any]]) -> None:
        """Log which sections each source set, without their values.

        pydantic-settings calls this when ``PYDANTIC_SETTINGS_DEBUG`` is set, and its own
        version logs each source's values: secrets from the file and the environment too.
        """
        lines = [f"Resolving settings for {cls.__name__!r} (sections per source, highest first):"]
        lines.extend(
            f"  {name}: {', '.join(map(repr, state)) or '-'}" for name, state in states.items()
        )
        logging.getLogger("pydantic_settings").debug("\n".join(lines))

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        problems: Problems = []
        problems.extend(_duplicates("targets", [t.name for t in self.targets], "target"))
        problems.extend(_duplicates("scenarios", [s.name for s in self.scenarios], "scenario"))
        known = {t.name for t in self.targets}
        for i, scenario in enumerate(self.scenarios):
            at = f"scenarios[{i}]"
            unknown = [(k, n) for k, n in enumerate(scenario.targets or ()) if n not in known]
            problems.extend((f"{at}.targets[{k}]", f"unknown target {n!r}") for k, n in unknown)
            if unknown:
                continue  # the checks below need every target to exist
            if scenario.total_connections + PROBE_RESERVE > self.limits.max_connections:
                problems.append(
                    (
                        at,
                        f"opens {scenario.total_connections} connections at its peak; with"
                        f" {PROBE_RESERVE} kept for its probes that is more than"
                        f" limits.max_connections ({self.limits.max_connections})",
                    )
                )
            spike_total = scenario.load.total_connections
            if self.sharding.enabled and spike_total < self.sharding.replicas:
                problems.append(
                    (
                        at,
                        f"spikes {spike_total} connections, fewer than"
                        f" sharding.replicas ({self.sharding.replicas}): some replicas"
                        " would have no share",
                    )
                )
            if self.sharding.enabled and scenario.schedule.jitter:
                problems.append(
                    (
                        f"{at}.schedule.jitter",
                        "must be 0 with sharding: every replica fires at the same instant",
                    )
                )
            if scenario.stable is not None and scenario.stable.mode == "echo":
                problems.extend(self._keepalive_problems(at, scenario))
        if problems:
            raise invalid(problems)
        return self

    def _keepalive_problems(self, at: str, scenario: ScenarioConfig) -> Problems:
        """Stable mode echo (or message) needs a keepalive message on every target."""
        assert scenario.stable is not None
        mode = scenario.stable.mode
        problems: Problems = []
        no_echo = []
        for target in self.targets_of(scenario):
            if target.keepalive is not None:
                continue
            if target.conversation is not None:
                # A conversation's steps are never re-sent as a keepalive (issue 13).
                index = self.targets.index(target)
                problems.append(
                    (
                        f"targets[{index}].keepalive",
                        f"is needed by {at}.stable.mode {mode}: the conversation is not"
                        " re-sent to keep a connection alive",
                    )
                )
            elif target.echo is None:
                no_echo.append(target.name)
        if no_echo:
            names = ", ".join(repr(n) for n in no_echo)
            problems.append((f"{at}.stable.mode", f"{mode} needs echo on target {names}"))
        return problems

    def target(self, name: str) -> TargetConfig:
        """Return the target called ``name``; raise KeyError if there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def scenario(self, name: str) -> ScenarioConfig:
        """Return the scenario called ``name``; raise KeyError if there is none."""
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        raise KeyError(name)

    def targets_of(self, scenario: ScenarioConfig) -> tuple[TargetConfig, ...]:
        """Return the targets ``scenario`` runs against, in the order it lists them."""
        if scenario.targets is None:
            return self.targets
        return tuple(self.target(name) for name in scenario.targets)

    def pairs(self) -> list[tuple[TargetConfig, ScenarioConfig]]:
        """Return every (target, scenario) pair that runs, scenario by scenario."""
        return [(t, s) for s in self.scenarios for t in self.targets_of(s)]


def _duplicates(section: str, names: list[str], kind: str) -> Problems:
    first: dict[str, int] = {}
    problems: Problems = []
    for index, name in enumerate(names):
        if name in first:
            problems.append(
                (
                    f"{section}[{index}].name",
                    f"another {kind} is called {name!r} ({section}[{first[name]}])",
                )
            )
        else:
            first[name] = index
    return problems
