"""Loading: the YAML file, environment overrides, problem paths, files the config names."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from spikewatch.config import SpikewatchConfig, load_config, parse_config, render_effective_config
from spikewatch.config import model as config_model
from spikewatch.config.env_source import EnvironmentSource
from spikewatch.config.yaml_source import YamlFileSource
from spikewatch.errors import ConfigError

BASE = """\
targets:
  - name: chat
    url: ws://chat.test/ws
  - name: feed
    url: ws://feed.test/ws
scenarios:
  - name: burst
    spike: {connections: 5}
  - name: ramp
    ramp: {steps: [1, 2], step_interval: 1s}
"""

PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path, **environ: str) -> Any:
    return load_config(path, environ=environ)


def problems_of(path: Path | None, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    return [str(problem) for problem in caught.value.problems]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "spikewatch.yaml", BASE)


# --- the file --------------------------------------------------------------------------


def test_loads_a_file(base: Path) -> None:
    """A valid file loads into the model."""
    cfg = load(base)
    assert [t.name for t in cfg.targets] == ["chat", "feed"]
    assert cfg.scenarios[1].ramp is not None
    assert cfg.scenarios[1].ramp.step_interval == 1.0


def test_config_path_falls_back_to_spikewatch_config(base: Path) -> None:
    """Without a path, SPIKEWATCH_CONFIG names the file."""
    assert load_config(environ={"SPIKEWATCH_CONFIG": str(base)}).targets[0].name == "chat"
    assert load_config("", environ={"SPIKEWATCH_CONFIG": str(base)}).targets[0].name == "chat"


def test_no_config_path_at_all_is_a_config_error() -> None:
    """Without a path and without SPIKEWATCH_CONFIG, loading is a ConfigError."""
    assert problems_of(None) == ["no config file: pass --config FILE or set SPIKEWATCH_CONFIG"]
    assert problems_of(None, SPIKEWATCH_CONFIG="") == [
        "no config file: pass --config FILE or set SPIKEWATCH_CONFIG"
    ]


def test_unreadable_config_file_is_one_problem(tmp_path: Path) -> None:
    """A missing file, a folder or a non-UTF-8 file is one problem naming the file."""
    missing = tmp_path / "missing.yaml"
    assert problems_of(missing) == [f"cannot read {missing}: No such file or directory"]
    assert problems_of(tmp_path) == [f"cannot read {tmp_path}: Is a directory"]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"log: {level: \xe9}\n")
    assert problems_of(latin) == [f"{latin} is not UTF-8 text"]


def test_config_error_names_its_source(tmp_path: Path) -> None:
    """The ConfigError carries the file it is about, and its text lists every problem."""
    path = write(tmp_path / "c.yaml", "targets: []\nscenarios: []\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.source == str(path)
    assert str(caught.value) == (
        f"invalid config in {path}:\n"
        "  targets: must have at least 1 item(s)\n"
        "  scenarios: must have at least 1 item(s)"
    )


def test_yaml_syntax_error_is_one_problem_with_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error is one problem with line and column, without the line's text."""
    path = write(tmp_path / "c.yaml", "server:\n  api_token: hunter2: oops\n")
    [problem] = problems_of(path)
    assert problem == "invalid YAML at line 2, column 21: mapping values are not allowed here"
    path = write(tmp_path / "c.yaml", "targets: [\n")
    [problem] = problems_of(path)
    assert problem.startswith("invalid YAML at line 2, column 1: expected the node content")
    assert problem.endswith("(while parsing a flow node)")


def test_yaml_reader_and_constructor_errors_are_problems(tmp_path: Path) -> None:
    """Control characters and unsafe tags in the file are problems too."""
    path = write(tmp_path / "c.yaml", "log: \x07\n")
    assert problems_of(path) == ["invalid YAML at character 6: special characters are not allowed"]
    path = write(tmp_path / "c.yaml", "log: !!python/object:os.system x\n")
    [problem] = problems_of(path)
    assert problem.startswith("invalid YAML at line 1, column 6: could not determine a constructor")


def test_other_yaml_errors_give_no_details(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A YAML error without a position is one generic problem, showing nothing of the file."""

    def fail(text: str) -> object:
        raise yaml.YAMLError(text)

    monkeypatch.setattr(yaml, "safe_load", fail)
    assert problems_of(base) == ["invalid YAML"]


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a string"), ("5\n", "a int")]
)
def test_file_that_is_not_a_mapping_is_a_problem(tmp_path: Path, text: str, kind: str) -> None:
    """A document that is not a mapping of sections is one problem."""
    path = write(tmp_path / "c.yaml", text)
    assert problems_of(path) == [f"must be a mapping of sections, not {kind}"]


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    """An empty file is a config with nothing set: targets and scenarios are missing."""
    path = write(tmp_path / "c.yaml", "# nothing yet\n")
    assert problems_of(path) == ["targets: required", "scenarios: required"]


def test_odd_yaml_shapes_are_problems_not_crashes(tmp_path: Path) -> None:
    """Non-string keys and self-referencing anchors become problems."""
    path = write(tmp_path / "c.yaml", BASE + "1: one\n")
    assert problems_of(path) == ["[1]: keys must be strings"]
    path = write(tmp_path / "c.yaml", BASE + "log: &loop {level: *loop}\n")
    [problem] = problems_of(path)
    assert problem.startswith("log.level: ")


def test_several_problems_are_all_reported_with_paths(tmp_path: Path) -> None:
    """Every problem in a file is reported at once, each at its field path."""
    path = write(
        tmp_path / "c.yaml",
        """\
        server: {listen: nowhere}
        limits: {max_connections: 0, max_runs: 2}
        targets:
          - name: chat
            url: http://chat.test/
          - name: feed
        scenarios:
          - name: burst
            spike: {connections: 3, batches: 0}
            recovery: {timeout: forever}
        """,
    )
    assert problems_of(path) == [
        "server.listen: must be host:port, like 0.0.0.0:9878 or [::1]:9878",
        "limits.max_connections: must be ≥ 1",
        "limits.max_runs: unknown field",
        "targets[0].url: must start with ws:// or wss://",
        "targets[1].url: required",
        "scenarios[0].spike.batches: must be ≥ 1",
        "scenarios[0].recovery.timeout: expected a duration like 250ms, 5s or 15m, got 'forever'",
    ]


def test_loads_the_shipped_example(tmp_path: Path) -> None:
    """The example config shipped with the package loads, given its secret files."""
    example = Path(config_model.__file__).with_name("example.yaml")
    token = write(tmp_path / "token", "t0ken\n")
    secret = write(tmp_path / "secret", "s3cr3t\n")
    cfg = load_config(
        example,
        environ={
            "SPIKEWATCH_SERVER__API_TOKEN_FILE": str(token),
            "SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET_FILE": str(secret),
        },
    )
    assert [(t.name, s.name) for t, s in cfg.pairs()] == [
        ("chat-staging", "avalanche"),
        ("chat-staging", "ramp"),
    ]
    assert cfg.scenarios[1].schedule.cron == "7,37 * * * *"


# --- environment overrides -------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """SPIKEWATCH_ variables win over the file, with __ between levels."""
    path = write(tmp_path / "c.yaml", BASE + "limits: {max_connections: 100}\n")
    cfg = load(path, SPIKEWATCH_LIMITS__MAX_CONNECTIONS="50", SPIKEWATCH_LOG__LEVEL="debug")
    assert cfg.limits.max_connections == 50
    assert cfg.log.level == "debug"


def test_environment_indexes_lists(base: Path) -> None:
    """A number in a variable name indexes a list; the other items stay as in the file."""
    cfg = load(
        base,
        SPIKEWATCH_TARGETS__0__URL="wss://other.test/ws",
        SPIKEWATCH_SCENARIOS__1__RAMP__STEPS__1="9",
        SPIKEWATCH_SCENARIOS__0__SPIKE__CONNECTIONS="9",
    )
    assert [t.url for t in cfg.targets] == ["wss://other.test/ws", "ws://feed.test/ws"]
    assert cfg.scenarios[0].spike is not None
    assert cfg.scenarios[0].spike.connections == 9
    assert cfg.scenarios[1].ramp is not None
    assert cfg.scenarios[1].ramp.steps == (1, 9)


def test_environment_names_ignore_case(base: Path) -> None:
    """Variable names match in any case."""
    cfg = load(base, spikewatch_limits__Max_Connections="17")
    assert cfg.limits.max_connections == 17


def test_environment_can_add_list_items(base: Path) -> None:
    """The index just past the end of a list adds an item, in index order."""
    cfg = load(
        base,
        SPIKEWATCH_TARGETS__2__NAME="third",
        SPIKEWATCH_TARGETS__2__URL="ws://third.test/",
        SPIKEWATCH_TARGETS__3__NAME="fourth",
        SPIKEWATCH_TARGETS__3__URL="ws://fourth.test/",
        SPIKEWATCH_TARGETS__0__SUBPROTOCOLS__0="chat.v1",
        SPIKEWATCH_TARGETS__0__SUBPROTOCOLS__1="chat.v2",
    )
    assert [t.name for t in cfg.targets] == ["chat", "feed", "third", "fourth"]
    assert cfg.targets[0].subprotocols == ("chat.v1", "chat.v2")


def test_environment_can_build_a_whole_config(tmp_path: Path) -> None:
    """Sections missing from the file are created, lists included."""
    path = write(tmp_path / "c.yaml", "")
    cfg = load(
        path,
        SPIKEWATCH_TARGETS__0__NAME="chat",
        SPIKEWATCH_TARGETS__0__URL="ws://chat.test/",
        SPIKEWATCH_SCENARIOS="[{name: burst, spike: {connections: 1}}]",
        SPIKEWATCH_SERVER__LISTEN="[::1]:0",
    )
    assert (cfg.targets[0].name, cfg.scenarios[0].name, cfg.server.host) == ("chat", "burst", "::1")


def test_environment_values_are_yaml(base: Path) -> None:
    """Values are YAML: flow mappings and lists, numbers, booleans, null."""
    cfg = load(
        base,
        SPIKEWATCH_TARGETS__0__HEADERS="{X-Client: spikewatch, X-Team: core}",
        SPIKEWATCH_TARGETS__0__WELCOME="{match: hello, timeout: 1s}",
        SPIKEWATCH_SCENARIOS__1__RAMP__STEPS="[3, 4]",
        SPIKEWATCH_SCENARIOS__0__THRESHOLDS__SUCCESS_RATIO="0.95",
        SPIKEWATCH_SCENARIOS__0__ABORT__ERROR_RATIO="null",
        SPIKEWATCH_TARGETS__1__TLS__INSECURE_SKIP_VERIFY="false",
    )
    t = cfg.targets[0]
    assert t.headers == {"X-Client": "spikewatch", "X-Team": "core"}
    assert t.welcome is not None
    assert t.welcome.timeout == 1.0
    assert cfg.scenarios[1].ramp is not None
    assert cfg.scenarios[1].ramp.steps == (3, 4)
    assert cfg.scenarios[0].thresholds.success_ratio == 0.95
    assert cfg.scenarios[0].abort.error_ratio is None


def test_environment_keeps_text_fields_as_written(base: Path) -> None:
    """Text fields take the value verbatim: a token like 0777 or yes stays a string."""
    cfg = load(
        base,
        SPIKEWATCH_SERVER__API_TOKEN="0777",
        SPIKEWATCH_TARGETS__0__NAME="123",
        SPIKEWATCH_TARGETS__1__NAME="null",
        SPIKEWATCH_TARGETS__0__HEADERS__X_FLAG="yes",
        SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET="true",
        SPIKEWATCH_TARGETS__0__AUTH__JWT__CLAIMS__AUD="staging",
        SPIKEWATCH_TARGETS__0__AUTH__JWT__CLAIMS__LEVEL="3",
        SPIKEWATCH_SCENARIOS__0__SCHEDULE__CRON="*/5 * * * *",
    )
    assert cfg.server.api_token is not None
    assert cfg.server.api_token.get_secret_value() == "0777"
    t = cfg.targets[0]
    assert (t.name, t.headers) == ("123", {"x_flag": "yes"})
    assert cfg.targets[1].name == "null"  # a required field is never unset
    assert t.auth is not None
    assert t.auth.jwt.key_material() == "true"
    assert t.auth.jwt.claims == {"aud": "staging", "level": 3}
    assert cfg.scenarios[0].schedule.cron == "*/5 * * * *"


def test_environment_null_unsets_an_optional_text_field(tmp_path: Path) -> None:
    """null (or empty) unsets an optional text field, so a file's value can be dropped."""
    path = write(tmp_path / "c.yaml", BASE + "server: {api_token_file: /run/secrets/none}\n")
    cfg = load(path, SPIKEWATCH_SERVER__API_TOKEN_FILE="null", SPIKEWATCH_SERVER__API_TOKEN="t")
    assert cfg.server.api_token_file is None
    cfg = load(path, SPIKEWATCH_SERVER__API_TOKEN_FILE="")
    assert cfg.server.api_token_file is None


def test_environment_matches_file_keys_in_any_case(tmp_path: Path) -> None:
    """A mapping key the file already has is overridden whatever its case."""
    text = BASE.replace(
        "url: ws://chat.test/ws", "url: ws://chat.test/ws\n    headers: {X-Team: a}"
    )
    path = write(tmp_path / "c.yaml", text)
    cfg = load(
        path, SPIKEWATCH_TARGETS__0__HEADERS__X_TEAM="b", SPIKEWATCH_TARGETS__0__HEADERS__X="c"
    )
    assert cfg.targets[0].headers == {"X-Team": "a", "x_team": "b", "x": "c"}
    cfg = load(path, SPIKEWATCH_TARGETS__0__HEADERS__x_team="b")
    assert cfg.targets[0].headers["x_team"] == "b"
    path = write(tmp_path / "c.yaml", text.replace("X-Team", "X_Team"))
    cfg = load(path, SPIKEWATCH_TARGETS__0__HEADERS__X_TEAM="b")
    assert cfg.targets[0].headers == {"X_Team": "b"}


def test_environment_whole_section_then_fields(base: Path) -> None:
    """A whole section from the environment is applied before deeper variables."""
    cfg = load(
        base,
        SPIKEWATCH_LIMITS__MAX_CONCURRENT_RUNS="3",
        SPIKEWATCH_LIMITS="{max_connections: 10, max_concurrent_runs: 2}",
    )
    assert (cfg.limits.max_connections, cfg.limits.max_concurrent_runs) == (10, 3)


def test_environment_replaces_scalars_on_the_way(tmp_path: Path) -> None:
    """A file value in the way of a deeper variable is replaced: the environment wins."""
    path = write(tmp_path / "c.yaml", BASE + "limits: 5\n")
    assert load(path, SPIKEWATCH_LIMITS__MAX_CONNECTIONS="9").limits.max_connections == 9


def test_unrelated_spikewatch_variables_are_ignored(base: Path) -> None:
    """SPIKEWATCH_CONFIG and other SPIKEWATCH_ settings are not overrides."""
    cfg = load(
        base,
        SPIKEWATCH_CONFIG="/elsewhere.yaml",
        SPIKEWATCH_TEST_TIMEOUT_FACTOR="3",
        SPIKEWATCH_="x",
        OTHER_LIMITS__MAX_CONNECTIONS="1",
    )
    assert cfg.limits.max_connections == 2000


def test_environment_mistakes_are_problems(base: Path) -> None:
    """Bad indexes, bad YAML and empty name segments are problems naming the variable."""
    assert problems_of(
        base,
        SPIKEWATCH_TARGETS__5__URL="ws://x.test/",
        SPIKEWATCH_SCENARIOS__NAME="x",
        SPIKEWATCH_LIMITS__MAX_CONNECTIONS__="1",
        SPIKEWATCH_TARGETS__0__SUBPROTOCOLS="[chat",
    ) == [
        "SPIKEWATCH_LIMITS__MAX_CONNECTIONS__: empty name between '__'",
        "scenarios: SPIKEWATCH_SCENARIOS__NAME: expected a list index",
        "targets[0].subprotocols: SPIKEWATCH_TARGETS__0__SUBPROTOCOLS: invalid YAML at line 1,"
        " column 6: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)",
        "targets: SPIKEWATCH_TARGETS__5__URL: index 5 is past the end (the list has 2 items)",
    ]


def test_names_that_differ_only_in_case_are_each_applied(base: Path) -> None:
    """Two variables for one field, in different case: both apply, in order, each reported."""
    environ = {
        "SPIKEWATCH_TARGETS__0__SUBPROTOCOLS": "[chat",
        "spikewatch_targets__0__subprotocols": "[chat.v1, chat.v2]",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(base, environ=environ)
    assert [str(p) for p in caught.value.problems] == [
        "targets[0].subprotocols: SPIKEWATCH_TARGETS__0__SUBPROTOCOLS: invalid YAML at line 1,"
        " column 6: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"
        " (from spikewatch_targets__0__subprotocols)",
    ]
    environ["SPIKEWATCH_TARGETS__0__SUBPROTOCOLS"] = "[chat]"
    assert load_config(base, environ=environ).targets[0].subprotocols == ("chat.v1", "chat.v2")


def test_values_are_text_where_the_schema_says_so_by_exact_name(base: Path) -> None:
    """Under a mapping in a list's place a text field stays text; under a misspelled key, YAML."""
    assert problems_of(
        base, SPIKEWATCH_TARGETS="{a: 1}", SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET="{"
    ) == ["targets: must be a list (from SPIKEWATCH_TARGETS)"]
    misspelled = write(base.with_name("misspelled.yaml"), "Targets: [{}]\n" + BASE)
    assert problems_of(misspelled, SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET="{") == [
        "Targets[0].auth.jwt.secret: SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET: invalid YAML at"
        " line 1, column 2: expected the node content, but found '<stream end>'"
        " (while parsing a flow node)",
        "Targets: unknown field",
    ]


def test_problems_from_the_environment_name_their_variable(base: Path) -> None:
    """A problem in a value set by a variable says which variable set it."""
    assert problems_of(
        base,
        SPIKEWATCH_LIMITS__MAX_CONNECTIONS="0",
        SPIKEWATCH_LIMITS__MAX_CONNECTONS="1",
        SPIKEWATCH_TARGETS__2__URL="ws://new.test/",
        SPIKEWATCH_SCENARIOS__0__SPIKE="{connections: 2, batches: 3}",
    ) == [
        "limits.max_connections: must be ≥ 1 (from SPIKEWATCH_LIMITS__MAX_CONNECTIONS)",
        "limits.max_connectons: unknown field (from SPIKEWATCH_LIMITS__MAX_CONNECTONS)",
        "targets[2].name: required (from SPIKEWATCH_TARGETS__2__URL)",
        "scenarios[0].spike.batches: must be ≤ connections (2)"
        " (from SPIKEWATCH_SCENARIOS__0__SPIKE)",
    ]


def test_process_environment_is_the_default(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without environ, the process environment is read."""
    monkeypatch.setenv("SPIKEWATCH_LIMITS__MAX_CONNECTIONS", "11")
    monkeypatch.setenv("SPIKEWATCH_CONFIG", str(base))
    assert load_config().limits.max_connections == 11


# --- pydantic-settings ------------------------------------------------------------------


@pytest.fixture
def built_from(monkeypatch: pytest.MonkeyPatch) -> list[tuple[PydanticBaseSettingsSource, ...]]:
    """Record the sources pydantic-settings builds each SpikewatchConfig from, call by call."""
    calls: list[tuple[PydanticBaseSettingsSource, ...]] = []
    original = SpikewatchConfig._settings_build_values

    def spy(sources: tuple[PydanticBaseSettingsSource, ...], init_kwargs: dict[str, Any]) -> Any:
        calls.append(sources)
        return original(sources, init_kwargs)

    monkeypatch.setattr(SpikewatchConfig, "_settings_build_values", staticmethod(spy))
    return calls


def test_config_is_built_from_pydantic_settings_sources(
    base: Path, built_from: list[tuple[PydanticBaseSettingsSource, ...]]
) -> None:
    """The root is a BaseSettings: the environment, then the YAML file, both the library's."""
    assert issubclass(SpikewatchConfig, BaseSettings)
    assert SpikewatchConfig.model_config["env_prefix"] == "SPIKEWATCH_"
    assert SpikewatchConfig.model_config["env_nested_delimiter"] == "__"
    load(base, SPIKEWATCH_LIMITS__MAX_CONNECTIONS="17")
    parse_config(yaml.safe_load(BASE))
    SpikewatchConfig(**yaml.safe_load(BASE))
    [loading, parsing, constructing] = built_from
    assert [type(s) for s in loading] == [EnvironmentSource, YamlFileSource]
    assert [type(s) for s in parsing] == [YamlFileSource]
    assert [type(s) for s in constructing] == [InitSettingsSource, DefaultSettingsSource]
    assert isinstance(loading[0], EnvSettingsSource)
    assert isinstance(loading[1], YamlConfigSettingsSource)


def test_environment_source_returns_the_file_merged_with_the_environment(base: Path) -> None:
    """The environment source indexes lists and wins; the file source adds nothing above it."""
    document = yaml.safe_load(BASE) | {"limits": {"max_connections": 100}}
    file = YamlFileSource(SpikewatchConfig, document=document)
    environment = EnvironmentSource(
        SpikewatchConfig,
        file,
        {
            "SPIKEWATCH_TARGETS__1__URL": "ws://other.test/",
            "SPIKEWATCH_LIMITS__MAX_CONNECTIONS": "15",
        },
    )
    merged = environment()
    assert merged["limits"] == {"max_connections": 15}
    assert [t["url"] for t in merged["targets"]] == ["ws://chat.test/ws", "ws://other.test/"]
    assert document["limits"] == {"max_connections": 100}  # the file's document is untouched
    field = SpikewatchConfig.model_fields["limits"]
    assert environment.get_field_value(field, "limits") == (
        {"max_connections": 15},
        "limits",
        False,
    )
    assert file.get_field_value(field, "limits") == ({"max_connections": 100}, "limits", False)
    cfg = SpikewatchConfig(_build_sources=((environment, file), {}))
    assert (cfg.limits.max_connections, cfg.targets[1].url) == (15, "ws://other.test/")


def test_environment_section_replaces_the_files_whole(tmp_path: Path) -> None:
    """A variable that sets a section replaces the file's section; it is not merged into it."""
    path = write(
        tmp_path / "c.yaml", BASE + "limits: {max_connections: 100, max_concurrent_runs: 2}\n"
    )
    cfg = load(path, SPIKEWATCH_LIMITS="{max_concurrent_runs: 3}")
    assert (cfg.limits.max_connections, cfg.limits.max_concurrent_runs) == (2000, 3)


def test_parse_config_and_the_model_never_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside load_config, the root model reads its arguments only, as written."""
    monkeypatch.setenv("SPIKEWATCH_LIMITS__MAX_CONNECTIONS", "1")
    monkeypatch.setenv("SPIKEWATCH_TARGETS", "[]")
    data = yaml.safe_load(BASE)
    assert parse_config(data).limits.max_connections == 2000
    assert SpikewatchConfig.model_validate(data).limits.max_connections == 2000
    assert SpikewatchConfig(**data).limits.max_connections == 2000
    with pytest.raises(ValidationError) as caught:
        SpikewatchConfig.model_validate(data | {"Limits": {}})
    assert [e["type"] for e in caught.value.errors()] == ["extra_forbidden"]
    assert problems_of_data(data | {"Targets": []}) == ["Targets: unknown field"]


def problems_of_data(data: dict[Any, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return [str(problem) for problem in caught.value.problems]


def test_loaded_config_is_frozen_and_compares_by_value(base: Path) -> None:
    """A loaded config cannot change; configs loaded alike are equal, sections hash alike."""
    cfg = load(base)
    assert cfg == load(base)
    assert hash(cfg.limits) == hash(load(base).limits)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.targets = ()  # type: ignore[misc]
    # Frozen pydantic models hash their fields; targets hold dicts (headers), as always.
    with pytest.raises(TypeError, match="unhashable"):
        hash(cfg)


def test_keys_that_are_not_strings_are_reported_in_place(tmp_path: Path) -> None:
    """Top-level keys that are not strings are problems, in order with unknown fields."""
    path = write(tmp_path / "c.yaml", "zzz: 1\n1: one\naaa: 2\n~: 3\n1.5: 4\n" + BASE)
    assert problems_of(path) == [
        "zzz: unknown field",
        "[1]: keys must be strings",
        "aaa: unknown field",
        "None: keys must be strings",
        '["1.5"]: keys must be strings',
    ]
    data = yaml.safe_load(BASE) | {"\x000": "odd", 0: "zero", 2**70: "big"}
    assert problems_of_data(data) == [
        '["\\u00000"]: unknown field',
        "[0]: keys must be strings",
        '["1180591620717411303424"]: keys must be strings',
    ]


def test_pydantic_settings_debug_log_names_sections_not_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PYDANTIC_SETTINGS_DEBUG logs which source set which section, never a value."""
    monkeypatch.setenv("PYDANTIC_SETTINGS_DEBUG", "1")
    caplog.set_level(logging.DEBUG, logger="pydantic_settings")
    path = write(tmp_path / "c.yaml", BASE + "server: {api_token: hunter2-token}\n")
    load(path, SPIKEWATCH_TARGETS__0__AUTH__JWT__SECRET="jwt-hunter2")
    assert "EnvironmentSource: 'targets', 'scenarios', 'server'" in caplog.text
    assert "YamlFileSource: -" in caplog.text
    assert "hunter2" not in caplog.text


# --- files the config names ------------------------------------------------------------


def secret_config(tmp_path: Path, jwt: str) -> Path:
    return write(
        tmp_path / "c.yaml",
        BASE.replace(
            "url: ws://chat.test/ws",
            f"url: wss://chat.test/ws\n    auth:\n      jwt: {jwt}",
        )
        + "server: {api_token_file: token}\n",
    )


def test_secret_files_are_read_stripped_and_masked(tmp_path: Path) -> None:
    """api_token_file and jwt.secret_file are read, stripped, and never rendered."""
    write(tmp_path / "token", "t0ken-value\n")
    write(tmp_path / "jwt.key", "  jwt-s3cr3t\n")
    path = secret_config(tmp_path, "{secret_file: jwt.key}")
    cfg = load(path)
    assert cfg.server.api_token is not None
    assert cfg.server.api_token.get_secret_value() == "t0ken-value"
    assert cfg.server.api_token_file == tmp_path / "token"
    assert cfg.targets[0].auth is not None
    jwt = cfg.targets[0].auth.jwt
    assert jwt.key_material() == "jwt-s3cr3t"
    assert jwt.secret_file == tmp_path / "jwt.key"
    rendered = render_effective_config(cfg)
    assert "t0ken-value" not in rendered
    assert "jwt-s3cr3t" not in rendered
    assert str(tmp_path / "jwt.key") in rendered
    assert "t0ken-value" not in repr(cfg)


def test_private_key_file_is_read_as_pem(tmp_path: Path) -> None:
    """private_key_file is read whole, as the PEM key."""
    write(tmp_path / "token", "t")
    write(tmp_path / "key.pem", PEM)
    cfg = load(secret_config(tmp_path, "{algorithm: ES256, private_key_file: key.pem}"))
    assert cfg.targets[0].auth is not None
    assert cfg.targets[0].auth.jwt.key_material() == PEM


def test_relative_files_are_read_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative file names are relative to the config file, not to the working folder."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf / "token", "t")
    write(conf / "jwt.key", "s")
    path = secret_config(conf, "{secret_file: jwt.key}")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("conf") / path.name, environ={})
    assert cfg.server.api_token_file == conf / "token"


def test_parse_config_reads_files_relative_to_base_dir(tmp_path: Path) -> None:
    """parse_config takes a parsed mapping and reads its files from base_dir."""
    write(tmp_path / "token", "t0ken\n")
    data = yaml.safe_load(BASE) | {"server": {"api_token_file": "token"}}
    cfg = parse_config(data, base_dir=tmp_path)
    assert cfg.server.api_token is not None
    assert cfg.server.api_token.get_secret_value() == "t0ken"
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="embedded")
    assert caught.value.source == "embedded"


def test_unreadable_secret_files_are_problems_naming_the_field(tmp_path: Path) -> None:
    """A missing, empty, oversized, non-UTF-8 or non-PEM file is a problem at its field."""
    write(tmp_path / "token", " \n")
    path = secret_config(tmp_path, "{secret_file: /nonexistent/jwt.key}")
    assert problems_of(path) == [
        f"server.api_token_file: {tmp_path / 'token'} is empty",
        "targets[0].auth.jwt.secret_file: cannot read /nonexistent/jwt.key:"
        " No such file or directory",
    ]
    (tmp_path / "token").write_bytes(b"\xff\xfe")
    write(tmp_path / "jwt.key", "\n")
    path = secret_config(tmp_path, "{secret_file: jwt.key}")
    assert problems_of(path) == [
        f"server.api_token_file: {tmp_path / 'token'} is not UTF-8 text",
        f"targets[0].auth.jwt.secret_file: {tmp_path / 'jwt.key'} is empty",
    ]
    write(tmp_path / "token", "x" * (1024 * 1024 + 1))
    write(tmp_path / "key.pem", "k3y-not-pem")
    path = secret_config(tmp_path, "{algorithm: RS256, private_key_file: key.pem}")
    assert problems_of(path) == [
        f"server.api_token_file: {tmp_path / 'token'} is larger than 1048576 bytes",
        f"targets[0].auth.jwt.private_key_file: {tmp_path / 'key.pem'} is not a PEM private key",
    ]
    path = secret_config(tmp_path, "{algorithm: RS256, private_key_file: missing.pem}")
    assert problems_of(path)[1] == (
        f"targets[0].auth.jwt.private_key_file: cannot read {tmp_path / 'missing.pem'}:"
        " No such file or directory"
    )


def test_tls_files_must_be_readable(tmp_path: Path) -> None:
    """TLS files must exist and be readable; their paths are made absolute."""
    write(tmp_path / "ca.pem", "ca")
    path = write(
        tmp_path / "c.yaml",
        BASE.replace(
            "url: ws://feed.test/ws", "url: wss://feed.test/ws\n    tls: {ca_file: ca.pem}"
        ),
    )
    assert load(path).targets[1].tls.ca_file == tmp_path / "ca.pem"
    path = write(
        tmp_path / "c.yaml",
        BASE.replace(
            "url: ws://feed.test/ws",
            "url: wss://feed.test/ws\n"
            "    tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}",
        ),
    )
    assert problems_of(path) == [
        f"targets[1].tls.cert_file: cannot read {tmp_path / 'c.pem'}: No such file or directory",
        f"targets[1].tls.key_file: cannot read {tmp_path / 'k.pem'}: No such file or directory",
    ]


# --- secrets never leak ----------------------------------------------------------------

SECRETS = ("hunter2-token", "jwt-hunter2", "pem-hunter2", "header-hunter2", "query-hunter2")


def assert_no_secret(error: ConfigError) -> None:
    text = "\n".join([str(error), repr(error), *(repr(p) for p in error.problems)])
    for secret in SECRETS:
        assert secret not in text


def test_secrets_never_appear_in_config_errors(tmp_path: Path) -> None:
    """No secret value appears in a ConfigError, whatever else is wrong around it."""
    path = write(
        tmp_path / "c.yaml",
        """\
        server: {listen: nowhere, api_token: hunter2-token, api_token_file: /x}
        targets:
          - name: chat
            url: "http://chat.test/?token=query-hunter2"
            headers: {X-Key: "header-hunter2\\r\\n"}
            auth: {jwt: {secret: jwt-hunter2, send_as: cookie}}
          - name: feed
            url: ws://feed.test/
            auth: {jwt: {algorithm: RS256, private_key: pem-hunter2, secret: jwt-hunter2}}
          - name: plain
            url: ws://plain.test/
            auth: {jwt: {algorithm: RS256, private_key: pem-hunter2}}
          - name: token
            url: ws://plain.test/
            auth: {jwt: {secret: [jwt-hunter2]}}
        scenarios: []
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert [str(p) for p in caught.value.problems] == [
        "server.listen: must be host:port, like 0.0.0.0:9878 or [::1]:9878",
        "targets[0].url: must start with ws:// or wss://",
        "targets[0].headers.X-Key: value must be printable ASCII, without CR or LF",
        "targets[0].auth.jwt.send_as: must be header, subprotocol or query:<param>"
        " (param made of letters, digits and . _ ~ -)",
        "targets[1].auth.jwt.secret: is for HS*; RS256 signs with private_key or private_key_file",
        "targets[1].auth.jwt.private_key: is not a PEM private key",
        "targets[2].auth.jwt.private_key: is not a PEM private key",
        "targets[3].auth.jwt.secret: must be a string",
        "scenarios: must have at least 1 item(s)",
    ]
    assert_no_secret(caught.value)


def test_secrets_never_appear_in_syntax_or_override_errors(tmp_path: Path) -> None:
    """Neither a YAML error on a secret's line nor a bad override shows the secret."""
    path = write(tmp_path / "c.yaml", 'server: {api_token: "hunter2-token}\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert_no_secret(caught.value)
    path = write(tmp_path / "c.yaml", BASE)
    with pytest.raises(ConfigError) as caught:
        load(
            path,
            SPIKEWATCH_SERVER__API_TOKEN="hunter2-token",
            SPIKEWATCH_SERVER__API_TOKEN_FILE="/x",
            SPIKEWATCH_TARGETS__0__AUTH__JWT__CLAIMS="{a: [jwt-hunter2",
            SPIKEWATCH_TARGETS__1__AUTH__JWT="{algorithm: RS256, private_key: pem-hunter2}",
        )
    assert [p.path for p in caught.value.problems] == [
        "targets[0].auth.jwt.claims",
        "server.api_token",
        "targets[1].auth.jwt.private_key",
    ]
    assert_no_secret(caught.value)


def test_secret_file_contents_never_appear_in_errors(tmp_path: Path) -> None:
    """A key file that is not PEM is reported without its contents."""
    write(tmp_path / "token", "hunter2-token")
    write(tmp_path / "key.pem", "pem-hunter2")
    path = secret_config(tmp_path, "{algorithm: RS256, private_key_file: key.pem}")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert_no_secret(caught.value)


# --- any input: a config or a ConfigError, nothing else ---------------------------------

FIELD_NAMES = sorted(
    {
        name
        for model in vars(config_model).values()
        if isinstance(model, type) and issubclass(model, BaseModel)
        for name in model.model_fields
    }
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        ["5s", "250ms", "ws://h.test/", "wss://h.test:1/", "HS256", "* * * * *", "echo"]
    ),
)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6), st.integers(-2, 2))
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=40,
)
# A path as problems show it: fields, [index] and ["odd key"], maybe a bad-key marker.
PROBLEM_PATH = re.compile(
    r'(?:(?:[A-Za-z_][\w-]*|\[-?\d+\]|\[".*?"\])(?:\.[A-Za-z_][\w-]*|\[-?\d+\]|\[".*?"\])*)?'
    r"(?: \(key\))?"
)
VALID = {
    "server": {"listen": "127.0.0.1:0"},
    "targets": [
        {
            "name": "chat",
            "url": "wss://chat.test/ws",
            "headers": {"X-Client": "spikewatch"},
            "welcome": {"match": "hi"},
            "echo": {"payload": "{seq}", "match": "{seq}"},
            "auth": {"jwt": {"secret": "s", "claims": {"sub": "x"}}},
            "tls": {"server_name": "chat.test"},
        }
    ],
    "scenarios": [
        {
            "name": "burst",
            "schedule": {"every": "1m", "jitter": "1s"},
            "spike": {"connections": 5, "batches": 2},
            "stable": {"connections": 1, "mode": "echo"},
            "thresholds": {"success_ratio": 0.9, "dropped_stable": 0},
            "abort": {"error_ratio": 0.5},
        }
    ],
}


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return [prefix]
    paths = [prefix] if prefix else []
    for key, item in items:
        paths.extend(leaf_paths(item, (*prefix, key)))
    return paths


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = yaml.safe_load(yaml.safe_dump(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def assert_loads_or_config_error(path: Path, document: Any, environ: dict[str, str]) -> None:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        cfg = load_config(path, environ=environ)
    except ConfigError as error:
        problems = error.problems
    else:
        render_effective_config(cfg)
        return
    assert problems
    for problem in problems:
        assert PROBLEM_PATH.fullmatch(problem.path), problem
        assert problem.message


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(document=DOCUMENTS)
def test_any_yaml_document_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, document: Any
) -> None:
    """Any YAML document either loads or raises ConfigError with readable paths."""
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    assert_loads_or_config_error(path, document, {})


@FUZZ
@given(data=st.data())
def test_any_change_to_a_valid_config_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Replacing any part of a valid config with anything loads or raises ConfigError."""
    where = data.draw(st.sampled_from(leaf_paths(VALID)))
    document = replaced(VALID, where, data.draw(DOCUMENTS))
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    assert_loads_or_config_error(path, document, {})


SEGMENTS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(["0", "1", "2", "x"]))


@FUZZ
@given(
    environ=st.dictionaries(
        st.lists(SEGMENTS, min_size=1, max_size=5).map(
            lambda parts: "SPIKEWATCH_" + "__".join(parts).upper()
        ),
        st.one_of(st.text(max_size=12), st.sampled_from(["[1, 2]", "{a: b}", "null", "5s", "["])),
        max_size=4,
    )
)
def test_any_environment_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, environ: dict[str, str]
) -> None:
    """Any set of SPIKEWATCH_ variables over a valid file loads or raises ConfigError."""
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    assert_loads_or_config_error(path, VALID, environ)
