"""The config: a YAML file with environment overrides, validated into one frozen model.

    load_config(path, environ=...)   file + SPIKEWATCH_* overrides -> SpikewatchConfig
    parse_config(mapping)            an already-parsed config -> SpikewatchConfig
    render_effective_config(cfg)     YAML with defaults filled in and secrets masked

Both loaders raise :class:`spikewatch.errors.ConfigError` with every problem found.
"""

from spikewatch.config.durations import Duration, PositiveDuration, parse_duration
from spikewatch.config.loader import CONFIG_ENV, load_config, parse_config
from spikewatch.config.model import (
    ENV_PREFIX,
    AbortConfig,
    AuthConfig,
    BaselineConfig,
    EchoConfig,
    JwtAlgorithm,
    JwtConfig,
    LimitsConfig,
    LogConfig,
    ProberConfig,
    RampConfig,
    RecoveryConfig,
    ScenarioConfig,
    ScheduleConfig,
    ServerConfig,
    ShardingConfig,
    SpikeConfig,
    SpikewatchConfig,
    StableConfig,
    TargetConfig,
    ThresholdsConfig,
    TlsConfig,
    WelcomeConfig,
)
from spikewatch.config.render import render_effective_config

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "AbortConfig",
    "AuthConfig",
    "BaselineConfig",
    "Duration",
    "EchoConfig",
    "JwtAlgorithm",
    "JwtConfig",
    "LimitsConfig",
    "LogConfig",
    "PositiveDuration",
    "ProberConfig",
    "RampConfig",
    "RecoveryConfig",
    "ScenarioConfig",
    "ScheduleConfig",
    "ServerConfig",
    "ShardingConfig",
    "SpikeConfig",
    "SpikewatchConfig",
    "StableConfig",
    "TargetConfig",
    "ThresholdsConfig",
    "TlsConfig",
    "WelcomeConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "render_effective_config",
]
