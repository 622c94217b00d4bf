"""Bad input, property by property: a config, or a ConfigError that names the field.

tests/config/test_loader.py fuzzes whole documents and environments and checks that the
outcome is a config or a ConfigError with readable paths. These properties go further:
each mutation of a complete config (wrong type, missing or extra key, bad duration, huge
number, odd unicode) is reported *at the field it touched*; raw YAML text and bytes,
including what PyYAML itself fails on (nesting, 5000-digit integers, impossible dates),
are problems too; environment variables with odd names and values name themselves; a
config that loads can be scheduled; and ``spikewatch check-config`` exits 2 without a
traceback.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from spikewatch.cli import main
from spikewatch.config import SpikewatchConfig, load_config, parse_config, render_effective_config
from spikewatch.config.durations import MAX_SECONDS
from spikewatch.config.problems import path_key
from spikewatch.config.yaml_source import MAX_DEPTH, MAX_VALUES
from spikewatch.daemon.schedule import build_trigger
from spikewatch.engine.runner import run_deadline
from spikewatch.errors import ConfigError, ConfigProblem
from tests.config.test_loader import DOCUMENTS, PROBLEM_PATH
from tests.conftest import scaled

#: A config that sets every section and nearly every field.
FULL: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "limits": {"max_connections": 100, "max_concurrent_runs": 2},
    "prober": {
        "max_loop_lag_p99": "100ms",
        "max_start_lateness_p99": "250ms",
        "max_cpu_percent": 95,
        "lag_sample_interval": "20ms",
    },
    "log": {"format": "json", "level": "info"},
    "sharding": {"replicas": 2, "index": 1, "spike_delay": "2s"},
    "targets": [
        {
            "name": "chat",
            "url": "wss://chat.test/ws?x=1",
            "headers": {"X-Client": "spikewatch"},
            "subprotocols": ["chat.v1"],
            "handshake_timeout": "5s",
            "close_timeout": "1s",
            "welcome": {"match": '"type":\\s*"welcome"', "timeout": "2s"},
            "echo": {"payload": '{"seq":{seq}}', "match": '"seq":{seq}', "timeout": "2s"},
            "max_message_bytes": 65536,
            "auth": {
                "jwt": {
                    "algorithm": "HS256",
                    "secret": "s" * 32,
                    "claims": {"sub": "sw-{conn}", "aud": "a"},
                    "ttl": "5m",
                    "send_as": "query:token",
                }
            },
            "tls": {"server_name": "chat.test", "insecure_skip_verify": False},
        },
        {"name": "feed", "url": "ws://feed.test/ws"},
    ],
    "scenarios": [
        {
            "name": "avalanche",
            "targets": ["chat"],
            "schedule": {"every": "15m", "timezone": "UTC"},
            "spike": {"connections": 25, "batches": 3, "batch_interval": "1s"},
            "hold": "1s",
            "stable": {"connections": 10, "ping_interval": "1s", "mode": "auto", "timeout": "5s"},
            "baseline": {"probes": 5, "interval": "500ms"},
            "recovery": {
                "probe_interval": "500ms",
                "consecutive": 3,
                "tolerance": 0.2,
                "slack": "5ms",
                "timeout": "120s",
            },
            "thresholds": {
                "success_ratio": 0.99,
                "handshake_p95": "1s",
                "first_message_p95": "500ms",
                "message_rtt_p95": "500ms",
                "recovery": "60s",
                "dropped_stable": 0,
            },
            "abort": {"error_ratio": 0.5, "min_attempts": 10},
            "timeout": "10m",
        },
        {
            "name": "ramp",
            "ramp": {"steps": [5, 10], "step_interval": "10s"},
            "schedule": {"cron": "7,37 * * * *"},
        },
    ],
}

#: Mappings whose keys are the user's (header names, JWT claims), not fields.
FREE_MAPPINGS = {"targets[0].headers", "targets[0].auth.jwt.claims"}


def nodes(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Return the path of every node under ``value`` (not the root), parents first."""
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return []
    found = []
    for key, item in items:
        found.append((*at, key))
        found.extend(nodes(item, (*at, key)))
    return found


def get(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


def shown(path: tuple[Any, ...]) -> str:
    """Return a path as problems show it: ``targets[0].auth.jwt``."""
    return "".join(path_key(key) for key in path).removeprefix(".")


PATHS = nodes(FULL)
MAPPINGS = [p for p in [(), *PATHS] if isinstance(get(FULL, p), dict)]
MODEL_MAPPINGS = [p for p in MAPPINGS if shown(p) not in FREE_MAPPINGS]
DURATIONS = [
    p
    for p in PATHS
    if isinstance(get(FULL, p), str) and get(FULL, p)[-1:] in "sm" and get(FULL, p)[0].isdigit()
]
NUMBERS = [p for p in PATHS if type(get(FULL, p)) in (int, float)]
#: Keys whose absence is a problem of their own.
REQUIRED = [
    ("targets", 0, "name"),
    ("targets", 1, "url"),
    ("targets", 0, "welcome", "match"),
    ("targets", 0, "echo", "payload"),
    ("targets", 0, "auth", "jwt"),
    ("scenarios", 0, "name"),
    ("scenarios", 0, "spike", "connections"),
    ("scenarios", 0, "stable", "connections"),
    ("scenarios", 1, "ramp", "steps"),
    ("scenarios", 1, "ramp", "step_interval"),
    ("targets",),
    ("scenarios",),
]

HUGE = st.sampled_from(
    [2**63, -(2**63) - 1, 10**100, -(10**30), 1e308, -1e308, math.inf, math.nan, 2**53 + 1]
)
ODD_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\r\n",
            "\u202e",  # right-to-left override
            "\ud7ff\ue000",
            "İ",
            "ﬀ",
            "\uff15s",  # fullwidth digit five
            "a" * 5000,
            "(",  # not a regex
            "[a-",
            "{seq",
            "ws://",
            "ws://[::1",
            "wss://h.test:99999/",
            "*/0 * * * *",
            "Mars/Olympus",
        ]
    ),
)
BAD_DURATIONS = st.one_of(
    st.sampled_from(
        ["5 s", "1d", "-1s", "ms", "5sm", "", "1e400", "inf", "nan", "1_000s", "0x10", "\uff15s"]
    ),
    st.sampled_from([-1, -0.001, math.inf, math.nan, 10**400, True, [], {}]),
    st.floats(min_value=MAX_SECONDS * 1.0001, max_value=1e300),
    st.integers(min_value=int(MAX_SECONDS) + 1, max_value=10**30).map(lambda n: f"{n}s"),
    # "d" is no unit: whatever comes before it, the text is not a duration.
    st.text(alphabet="0123456789.smh -+eE", max_size=8).map(lambda t: t + "d"),
)
VALUES = st.one_of(DOCUMENTS, HUGE, ODD_TEXT, BAD_DURATIONS)
DELETE = object()

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: For examples that write a file or parse thousands of characters each.
SLOWER = settings(FAST, max_examples=50)


def mutated(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(FULL)
    parent = get(document, path[:-1])
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def related(problem: ConfigProblem, at: str, was: object = None) -> bool:
    """Whether a problem is about the field at ``at``: there, around it, inside it, or naming it.

    Checks across fields report at the other field and name this one, or the value it
    had, in their message ("more than limits.max_connections (1)", "unknown target 'chat'").
    """
    if isinstance(was, str) and len(was) >= 3 and repr(was) in problem.message:
        return True
    path = problem.path
    if (
        path == at
        or path.startswith((f"{at}.", f"{at}["))
        or at.startswith((f"{path}.", f"{path}["))
    ):
        return True
    field = at.rsplit(".", 1)[-1].split("[", 1)[0]
    return bool(field) and field in problem.message


def assert_well_formed(problems: list[ConfigProblem]) -> None:
    assert problems
    for problem in problems:
        assert PROBLEM_PATH.fullmatch(problem.path), problem
        assert problem.message.strip(), problem
        assert "Traceback" not in problem.message


def assert_usable(config: SpikewatchConfig) -> None:
    """A config that loads renders, and every pair can be scheduled and given a deadline."""
    render_effective_config(config)
    for scenario in config.scenarios:
        build_trigger(scenario.schedule)
    for target, scenario in config.pairs():
        assert math.isfinite(run_deadline(scenario, target))


def outcome(document: Any) -> list[ConfigProblem]:
    """Parse ``document``; return its problems ([] when it loads, after checking it is usable)."""
    try:
        config = parse_config(document)
    except ConfigError as error:
        assert_well_formed(error.problems)
        return error.problems
    assert_usable(config)
    return []


def test_the_full_config_loads() -> None:
    """The config every mutation starts from is valid and sets what the tests think it sets."""
    assert outcome(FULL) == []
    assert len(DURATIONS) > 20
    assert len(NUMBERS) > 10
    assert all(get(FULL, p[:-1]) for p in REQUIRED if len(p) > 1)


# --- mutations of a valid config -------------------------------------------------------


@FAST
@given(where=st.sampled_from(PATHS), value=st.one_of(st.just(DELETE), VALUES))
@example(where=("scenarios", 0, "schedule", "every"), value=1e300)  # overflowed timedelta
@example(where=("limits", "max_connections"), value=10**4000)  # YAML reads ≤ 4300 digits
def test_any_mutation_is_reported_at_the_field_it_touched(
    where: tuple[Any, ...], value: Any
) -> None:
    """Any value at (or removal of) any field loads, or a problem names that field."""
    problems = outcome(mutated(where, value))
    if problems and not (value is DELETE and isinstance(where[-1], int)):
        at = shown(where)
        assert any(related(p, at, get(FULL, where)) for p in problems), (at, problems)


@FAST
@given(
    where=st.sampled_from(MODEL_MAPPINGS),
    key=st.one_of(st.text(max_size=10), st.integers(-(2**63), 2**63 - 1)),
)
def test_unknown_keys_are_reported_where_they_are(where: tuple[Any, ...], key: str | int) -> None:
    """A key that is not a field, in any section, is an unknown field (or a bad key) there."""
    assume(key not in get(FULL, where))
    problems = outcome(mutated((*where, key), "x"))
    at = shown((*where, key)) if isinstance(key, str) else shown(where) + f"[{key}]"
    expected = "unknown field" if isinstance(key, str) else "keys must be strings"
    assert ConfigProblem(at, expected) in problems, problems


@pytest.mark.parametrize("where", REQUIRED, ids=shown)
def test_every_required_field_missing_is_named(where: tuple[Any, ...]) -> None:
    """Removing a required field is a problem at its path."""
    problems = outcome(mutated(where, DELETE))
    at = shown(where)
    assert any(p.path == at for p in problems), problems


@FAST
@given(where=st.sampled_from(DURATIONS), value=BAD_DURATIONS)
def test_bad_durations_are_reported_at_their_field(where: tuple[Any, ...], value: Any) -> None:
    """A malformed, negative, non-finite or longer-than-a-year duration is refused there."""
    problems = outcome(mutated(where, value))
    at = shown(where)
    assert any(p.path == at for p in problems), (at, value, problems)


@FAST
@given(where=st.sampled_from(DURATIONS), seconds=st.floats(min_value=0, max_value=MAX_SECONDS))
def test_durations_up_to_a_year_are_never_refused_as_durations(
    where: tuple[Any, ...], seconds: float
) -> None:
    """Up to 365 days a duration is read; any problem left is a range or a rule, not its form."""
    for problem in outcome(mutated(where, seconds)):
        assert "duration" not in problem.message, problem
        assert "365 days" not in problem.message, problem


@FAST
@given(where=st.sampled_from(NUMBERS), value=st.one_of(HUGE, st.integers(), st.floats()))
def test_any_number_in_a_number_field_loads_or_is_named(where: tuple[Any, ...], value: Any) -> None:
    """Huge, negative, fractional or non-finite numbers load (usable) or are named."""
    problems = outcome(mutated(where, value))
    at = shown(where)
    assert not problems or any(related(p, at) for p in problems), (at, problems)


# --- what PyYAML itself chokes on ------------------------------------------------------

NESTING = st.integers(min_value=MAX_DEPTH - 2, max_value=700)
FRAGMENTS = st.sampled_from(
    [
        "a: 2001-02-30\n",  # a date that does not exist: ValueError in PyYAML
        "a: 0x_\n",  # int('', 16)
        "a: !!binary 'not base64!'\n",
        "a: !!timestamp x\n",
        "a: !!int x\n",  # ValueError quoting the value
        "a: !!bool x\n",  # KeyError
        "a: !!float .\n",
        "a: !!python/object:os.system x\n",
        "a: !!set {x, y}\n",
        "a: !!omap [x: 1]\n",
        "<<: {targets: []}\n",
        "a: &x [*x]\n",
        "a: *nothing\n",
        "a: {b: 1, b: 2}\n",
        "? [a, b]\n: c\n",
        "a: |\n  text\n",
        "%YAML 1.1\n---\na: 1\n",
        "---\na: 1\n---\nb: 2\n",
        "\t\ta: 1\n",
        "a: '\x07'\n",
        "a: 1:30:00\n",
        "a: .nan\nb: -.inf\n",
    ]
)


def nested(depth: int, kind: str) -> str:
    if kind == "flow":
        return "a: " + "[" * depth + "1" + "]" * depth + "\n"
    if kind == "map":
        return "a: " + "{b: " * depth + "1" + "}" * depth + "\n"
    return "a:\n" + "".join(" " * (i + 1) + "- \n" for i in range(depth)) + "\n"


def laughs(levels: int) -> str:
    """Aliases of aliases: 10 ** levels values from a few lines (the 'billion laughs')."""
    text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    return text


RAW_TEXT = st.one_of(
    st.text(
        alphabet=st.sampled_from(list("ab:-[]{},&*!?|>'\"#%@ \n\t.0123456789eE+~")), max_size=60
    ),
    st.text(max_size=40),
    st.lists(FRAGMENTS, max_size=4).map("".join),
    st.builds(nested, NESTING, st.sampled_from(["flow", "map", "block"])),
    st.integers(min_value=4200, max_value=6000).map(lambda n: "a: " + "7" * n + "\n"),
    st.integers(min_value=4, max_value=9).map(laughs),
)
VALID_TEXT = yaml.safe_dump(FULL, allow_unicode=True)


def load_text(path: Path, text: str | bytes) -> list[ConfigProblem]:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path, environ={})
    except ConfigError as error:
        assert_well_formed(error.problems)
        return error.problems
    assert_usable(config)
    return []


@SLOWER
@given(text=RAW_TEXT, after_valid=st.booleans())
@example(text=nested(1000, "flow"), after_valid=True)
@example(text="a: " + "1" * 5000 + "\n", after_valid=True)
@example(text="a: 2001-02-30\n", after_valid=True)
@example(text=laughs(9), after_valid=True)
def test_any_yaml_text_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str, after_valid: bool
) -> None:
    """Any text, alone or after a valid config, loads (usable) or is a ConfigError."""
    path = tmp_path_factory.mktemp("text") / "c.yaml"
    load_text(path, VALID_TEXT + text if after_valid else text)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=80))
@example(data=b"\xff\xfe" + "a: 1\n".encode("utf-16-le"))
@example(data="\ufeff".encode() + VALID_TEXT.encode())
def test_any_bytes_load_or_are_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Any bytes (not UTF-8, a BOM, NULs) load or are a ConfigError."""
    load_text(tmp_path_factory.mktemp("bytes") / "c.yaml", data)


def test_too_deep_and_too_large_documents_are_named_problems(tmp_path: Path) -> None:
    """Nesting past MAX_DEPTH and aliases past MAX_VALUES are one problem each, at their path."""
    [problem] = load_text(tmp_path / "c.yaml", VALID_TEXT + nested(1000, "flow"))
    assert problem.message == f"invalid YAML: nested more than {MAX_DEPTH} levels deep"
    deep: Any = 1
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    claims_at = ("targets", 0, "auth", "jwt", "claims", "deep")
    [problem] = outcome(mutated(claims_at, deep))
    assert problem.path.startswith(shown(claims_at) + "[0][0]")
    assert problem.message == f"nested more than {MAX_DEPTH} levels deep"
    [problem] = load_text(tmp_path / "c.yaml", VALID_TEXT + laughs(6))
    assert problem == ConfigProblem("l4", f"holds more than {MAX_VALUES} values (aliases expanded)")
    document = copy.deepcopy(FULL)
    document["targets"][0]["auth"]["jwt"]["claims"]["many"] = [[0] * 1000] * 200
    [problem] = outcome(document)
    assert problem.path == shown(claims_at[:-1]) + ".many"
    near: Any = 1
    for _ in range(MAX_DEPTH - len(claims_at) - 1):
        near = [near]
    assert outcome(mutated(claims_at, near)) == []


# --- environment overrides -------------------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(sorted({str(k) for p in PATHS for k in p})),
    st.sampled_from(["²", "٣", "00", "-1", "", "İ", "\u017ferver", "9" * 30, "0x1", "x"]),
)
ENV_VALUES = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        [
            "[1, 2]",
            "{a: b}",
            "null",
            "~",
            "[",
            "{",
            "!!binary x",
            "2001-02-30",
            "0x_",
            "1" * 5000,
            "[" * 600,
            "[" * 100 + "]" * 100,
            "*alias",
            "&a [*a]",
            "1e999",
            "-5s",
        ]
    ),
)


@SLOWER
@given(
    environ=st.dictionaries(
        st.lists(SEGMENTS, min_size=1, max_size=6).map(lambda s: "SPIKEWATCH_" + "__".join(s)),
        ENV_VALUES,
        max_size=4,
    )
)
@example(environ={"SPIKEWATCH_TARGETS__²__URL": "ws://x.test/"})  # isdigit() but not int()
@example(environ={"SPIKEWATCH_LOG": "[" * 600})
@example(environ={"SPIKEWATCH_LIMITS__MAX_CONNECTIONS": "9" * 5000})
def test_any_environment_over_a_full_config_loads_or_is_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, environ: dict[str, str]
) -> None:
    """Any SPIKEWATCH_ variables, odd names and values included, load or are a ConfigError."""
    path = tmp_path_factory.mktemp("env") / "c.yaml"
    path.write_text(VALID_TEXT, encoding="utf-8")
    try:
        config = load_config(path, environ=environ)
    except ConfigError as error:
        assert_well_formed(error.problems)
    else:
        assert_usable(config)


def env_name(path: tuple[Any, ...]) -> str:
    return "SPIKEWATCH_" + "__".join(str(k).upper() for k in path)


@SLOWER
@given(
    where=st.sampled_from(NUMBERS + DURATIONS),
    raw=st.sampled_from(["{x: 1}", "[1, [2]]", "[", "2001-02-30", "1" * 5000, "[" * 500]),
)
def test_a_bad_environment_value_names_its_variable(
    tmp_path_factory: pytest.TempPathFactory, where: tuple[Any, ...], raw: str
) -> None:
    """A value of the wrong shape for a number or duration field names its variable."""
    path = tmp_path_factory.mktemp("env") / "c.yaml"
    path.write_text(VALID_TEXT, encoding="utf-8")
    name = env_name(where)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={name: raw})
    assert_well_formed(caught.value.problems)
    at = shown(where)
    assert any(related(p, at) and name in p.message for p in caught.value.problems), (
        caught.value.problems
    )


# --- the command line ------------------------------------------------------------------

CLI_CASES = {
    "deep": VALID_TEXT + nested(1000, "flow"),
    "digits": VALID_TEXT + "a: " + "1" * 5000 + "\n",
    "date": VALID_TEXT + "a: 2001-02-30\n",
    "laughs": VALID_TEXT + laughs(8),
    "year": yaml.safe_dump(mutated(("scenarios", 0, "schedule", "every"), 1e300)),
    "tag": VALID_TEXT.replace("s" * 32, "!!int hunter2-secret-value"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_check_config_reports_what_broke_the_loader_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """check-config on what used to raise past the loader: exit 2, the problem, no traceback."""
    path = tmp_path / "c.yaml"
    path.write_text(CLI_CASES[case], encoding="utf-8")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"spikewatch: invalid config in {path}:\n  ")
    assert "Traceback" not in captured.err
    assert "hunter2" not in captured.err


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(where=st.sampled_from(PATHS), value=st.one_of(st.just(DELETE), VALUES))
def test_check_config_process_exits_2_naming_each_problem(
    tmp_path_factory: pytest.TempPathFactory, where: tuple[Any, ...], value: Any
) -> None:
    """`spikewatch check-config` on a broken config: exit 2, each problem shown, no traceback."""
    document = mutated(where, value)
    try:
        parse_config(document)
    except ConfigError as error:
        problems = error.problems
    else:
        assume(False)
    path = tmp_path_factory.mktemp("cli") / "c.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "spikewatch", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    for problem in problems:
        assert str(problem) in done.stderr, (problem, done.stderr)
