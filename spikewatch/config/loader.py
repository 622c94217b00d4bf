"""Load the config: the sources, then validation, then the files it names.

:class:`~spikewatch.config.SpikewatchConfig` is a pydantic-settings ``BaseSettings``;
:func:`load_config` builds it from two pydantic-settings sources, highest priority first:
:class:`~spikewatch.config.env_source.EnvironmentSource` (``SPIKEWATCH_*`` variables),
then :class:`~spikewatch.config.yaml_source.YamlFileSource` (the YAML file), handed to the
model with pydantic-settings' ``_build_sources``. :func:`parse_config` uses the second
alone, over a document already parsed.

Every failure becomes a :class:`~spikewatch.errors.ConfigProblem` at a readable field path
(:mod:`spikewatch.config.problems`), collected into one :class:`~spikewatch.errors.ConfigError`.
Messages come from pydantic's message, never its input, and no check of a field that may
hold a credential (secrets, keys, URLs, headers, files) repeats the value, so a secret
never reaches a log. Once the config is valid, the files it names are read
(:mod:`spikewatch.config.secret_files`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from spikewatch.config.env_source import EnvironmentSource, Overrides
from spikewatch.config.model import ENV_PREFIX, SpikewatchConfig
from spikewatch.config.problems import problems_from, with_origin
from spikewatch.config.secret_files import read_files
from spikewatch.config.yaml_source import MAX_DEPTH, MAX_VALUES, YamlFileSource, shape_problems
from spikewatch.errors import ConfigError, ConfigProblem

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "MAX_DEPTH",
    "MAX_VALUES",
    "EnvironmentSource",
    "YamlFileSource",
    "load_config",
    "parse_config",
]

#: Names the config file when no path is given.
CONFIG_ENV: Final = "SPIKEWATCH_CONFIG"


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> SpikewatchConfig:
    """Load, override from ``environ`` (default: the process environment) and validate.

    ``path`` falls back to ``SPIKEWATCH_CONFIG``. Relative file names inside the config
    are read relative to the config file's folder. Raise :class:`ConfigError` listing
    every problem found.
    """
    env = os.environ if environ is None else environ
    if path is None or str(path) == "":
        path = env.get(CONFIG_ENV) or None
    if path is None:
        raise ConfigError(
            [ConfigProblem("", f"no config file: pass --config FILE or set {CONFIG_ENV}")]
        )
    source = str(path)
    file_path = Path(path)
    file = YamlFileSource(SpikewatchConfig, file_path, source=source)
    environment = EnvironmentSource(SpikewatchConfig, file, env)
    return _build(
        (environment, file),
        file,
        environment.overrides,
        source,
        file_path.absolute().parent,
    )


def parse_config(
    data: Mapping[str, Any], *, source: str = "", base_dir: str | Path | None = None
) -> SpikewatchConfig:
    """Validate an already-parsed config (no environment overrides) and read its files.

    Relative file names are read relative to ``base_dir`` (default: the working folder).
    Raise :class:`ConfigError` listing every problem found.
    """
    document = YamlFileSource(SpikewatchConfig, document=data, source=source)
    return _build((document,), document, Overrides(), source, Path(base_dir or ".").absolute())


def _build(
    sources: tuple[YamlFileSource | EnvironmentSource, ...],
    file: YamlFileSource,
    overrides: Overrides,
    source: str,
    base_dir: Path,
) -> SpikewatchConfig:
    config: SpikewatchConfig | None = None
    validation: list[ConfigProblem] = []
    # The file first: applying the environment copies the document, which a document
    # too deep to validate would break too.
    for checked in (file, *(s for s in sources if s is not file)):
        validation = shape_problems(checked.document(), file.stand_ins)
        if validation:
            break
    try:
        if not validation:
            config = SpikewatchConfig(_build_sources=(sources, {}))
    except ValidationError as exc:
        validation = problems_from(exc, file.stand_ins)
    # The environment's own problems first; they are known once the sources have run.
    problems = [*overrides.problems, *validation]
    if config is not None and not problems:
        config, file_problems = read_files(config, base_dir)
        problems.extend(file_problems)
    if problems:
        raise ConfigError([with_origin(p, overrides.origin_of) for p in problems], source)
    assert config is not None  # no problems means validation succeeded
    return config
