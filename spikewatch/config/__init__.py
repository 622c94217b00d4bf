"""The config: a YAML file with environment overrides, validated into one frozen model.

    load_config(path, environ=...)   file + SPIKEWATCH_* overrides -> SpikewatchConfig
    parse_config(mapping)            an already-parsed config -> SpikewatchConfig
    render_effective_config(cfg)     YAML with defaults filled in and secrets masked

Both loaders raise :class:`spikewatch.errors.ConfigError` with every problem found.

The parts, one job each:

    loader.py        load_config, parse_config: sources -> validation -> files
    yaml_source.py   the YAML file, read behind guards (pydantic-settings' YAML source)
    env_source.py    SPIKEWATCH_* overrides with list indexes (pydantic-settings' env source)
    problems.py      problem paths, and pydantic's errors turned into ConfigProblems
    secret_files.py  the token, keys and TLS files the config names
    model.py         the root model; its sections in server.py, prober.py, target.py,
                     auth.py, scenario.py, on fields.py's base and field types
    durations.py     "250ms", "2m" -> seconds
    render.py        the effective config as YAML, secrets masked
"""

from spikewatch.config.durations import Duration, PositiveDuration, parse_duration
from spikewatch.config.loader import CONFIG_ENV, load_config, parse_config
from spikewatch.config.model import (
    ENV_PREFIX,
    AbortConfig,
    AuthConfig,
    BaselineConfig,
    ChurnConfig,
    EchoConfig,
    JwtAlgorithm,
    JwtConfig,
    LimitsConfig,
    LogConfig,
    ProberConfig,
    RampConfig,
    RecoveryConfig,
    RetentionConfig,
    ScenarioConfig,
    ScheduleConfig,
    ServerConfig,
    ShardingConfig,
    SpikeConfig,
    SpikewatchConfig,
    StableConfig,
    StorageConfig,
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
    "ChurnConfig",
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
    "load_config",
    "parse_config",
    "parse_duration",
    "render_effective_config",
]
