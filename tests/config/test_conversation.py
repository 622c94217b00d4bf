"""A target's conversation, heartbeats and keepalive: what loads, and every problem's path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikewatch.config import SpikewatchConfig, parse_config
from spikewatch.config.conversation import parse_hex, step_names
from spikewatch.errors import ConfigError


def config(target: dict[str, Any], **scenario: Any) -> dict[str, Any]:
    return {
        "targets": [{"name": "t", "url": "ws://127.0.0.1:1/", **target}],
        "scenarios": [{"name": "s", "spike": {"connections": 1}, **scenario}],
    }


def build(target: dict[str, Any], **scenario: Any) -> SpikewatchConfig:
    return parse_config(config(target, **scenario))


def problems(target: dict[str, Any], **scenario: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(target, **scenario))
    return [str(problem) for problem in caught.value.problems]


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"conversation": list(items)}


SOCKETIO = {
    "conversation": [
        {
            "name": "open",
            "expect": {"match": r'^0\{.*"sid":"(?P<sid>[^"]+)"'},
            "timeout": "2s",
            "measure": "first_message",
        },
        {"name": "connect", "send": {"text": "40"}},
        {"name": "connected", "expect": {"match": "^40"}},
        {"name": "event", "send": {"text": '42["echo",{"conn":{conn},"seq":{seq},"sid":"{sid}"}]'}},
        {
            "name": "echoed",
            "expect": {"match": r'^42\["echo",\{"conn":{conn},"seq":{seq}'},
            "measure": "round_trip",
        },
    ],
    "heartbeats": [{"when": {"match": "^2$"}, "answer": {"text": "3"}}],
    "keepalive": {
        "send": {"text": '42["echo",{"conn":{conn},"seq":{seq}}]'},
        "expect": {"match": r'^42\["echo"'},
    },
}


# -- what loads -----------------------------------------------------------------------------


def test_the_designs_socketio_example_loads() -> None:
    """The design's example loads with its steps, heartbeats and keepalive."""
    target = build(SOCKETIO).targets[0]
    assert target.conversation is not None
    assert step_names(target.conversation) == ["open", "connect", "connected", "event", "echoed"]
    assert target.conversation[0].expect is not None
    assert target.conversation[0].expect.captures == ("sid",)
    assert target.heartbeats[0].answer.text == "3"
    assert target.keepalive is not None
    assert target.steps_bound == 6.0


def test_unnamed_steps_are_called_step_n() -> None:
    """A step without a name is step<N>, 1-based."""
    target = build(steps({"send": {"text": "hi"}}, {"expect": {"match": "x"}})).targets[0]
    assert target.conversation is not None
    assert step_names(target.conversation) == ["step1", "step2"]


def test_json_and_hex_matchers_and_binary_sends_load() -> None:
    """json fields with captures, hex prefixes and hex sends are all accepted."""
    target = build(
        steps(
            {"send": {"hex": "10 0c 00 04"}},
            {"expect": {"hex": "2002 00"}, "repeat": 3},
            {"expect": {"json": {"type": "ack", "a.0.b": None, "n": 1.5, "ok": True}}},
            {"expect": {"json": {"type": "x"}, "capture": {"id": "data.id"}}, "optional": True},
            {"send": {"text": "{id}"}},
        )
    ).targets[0]
    assert target.conversation is not None
    assert target.conversation[3].expect is not None
    assert target.conversation[3].expect.captures == ("id",)
    assert target.steps_bound == 2.0 * 3 + 2.0 + 2.0


def test_old_welcome_and_echo_configs_load_unchanged() -> None:
    """welcome/echo targets load as before: no conversation, their bound as before."""
    target = build(
        {
            "welcome": {"match": "hello", "timeout": "1s"},
            "echo": {"payload": '{"seq":{seq},"x":{other}}', "match": "{seq}"},
        }
    ).targets[0]
    assert (target.conversation, target.heartbeats, target.keepalive) == (None, (), None)
    assert target.steps_bound == 3.0
    assert build({}).targets[0].steps_bound == 0.0


def test_stable_message_is_read_as_echo() -> None:
    """stable.mode message is echo's alias; a keepalive satisfies it on a conversation target."""
    target = {**steps({"expect": {"match": "x"}}), "keepalive": SOCKETIO["keepalive"]}
    scenario = build(target, stable={"connections": 1, "mode": "message"}).scenarios[0]
    assert scenario.stable is not None
    assert scenario.stable.mode == "echo"


def test_parse_hex_takes_spaces_and_either_case() -> None:
    """Hex bytes may be spaced or not, upper or lower case."""
    assert parse_hex("20 02 0A ff") == parse_hex("20020aFF") == b"\x20\x02\x0a\xff"


# -- every problem, at its path --------------------------------------------------------------


def test_a_capture_used_before_a_step_defines_it() -> None:
    """Using {sid} before the step that captures it names the field that uses it."""
    assert problems(
        steps(
            {"expect": {"match": "x"}},
            {"expect": {"match": "y"}},
            {"expect": {"match": "z"}},
            {"send": {"text": "{sid}"}},
            {"expect": {"match": "(?P<sid>.+)"}},
        )
    ) == ["targets[0].conversation[3].send.text: uses {sid} before a step captures it"]


def test_an_unknown_template_variable() -> None:
    """A bare {identifier} that is neither built-in nor a capture is an error, everywhere."""
    assert problems(
        {
            **steps({"send": {"text": '{"a":{nope}}'}}, {"expect": {"match": "{what}"}}),
            "heartbeats": [{"when": {"match": "{x}"}, "answer": {"text": "{y}"}}],
            "keepalive": {"send": {"text": "{z}"}, "expect": {"match": "{w}"}},
        }
    ) == [
        "targets[0].conversation[0].send.text: uses {nope}: not conn, seq or a capture",
        "targets[0].conversation[1].expect.match: uses {what}: not conn, seq or a capture",
        "targets[0].heartbeats[0].when.match: uses {x}: not conn, seq or a capture",
        "targets[0].heartbeats[0].answer.text: uses {y}: not conn, seq or a capture",
        "targets[0].keepalive.send.text: uses {z}: not conn, seq or a capture",
        "targets[0].keepalive.expect.match: uses {w}: not conn, seq or a capture",
    ]


def test_captures_reach_heartbeats_and_the_keepalive() -> None:
    """Heartbeats and the keepalive may use what the conversation captured."""
    build(
        {
            **steps({"expect": {"json": {"t": "hi"}, "capture": {"sid": "sid"}}}),
            "heartbeats": [{"when": {"match": "{sid}"}, "answer": {"text": "{sid}"}}],
            "keepalive": {"send": {"text": "{sid}"}, "expect": {"match": "{sid}"}},
        }
    )


def test_conversation_with_welcome_or_echo() -> None:
    """conversation replaces welcome and echo: not both."""
    assert problems(
        {
            **steps({"expect": {"match": "x"}}),
            "welcome": {"match": "hi"},
            "echo": {"payload": "p", "match": "p"},
        }
    ) == [
        "targets[0].welcome: goes with the short form: set conversation, or welcome and echo",
        "targets[0].echo: goes with the short form: set conversation, or welcome and echo",
    ]


def test_more_than_one_measure_of_a_kind() -> None:
    """Two steps measuring first_message (or round_trip) name the second."""
    assert problems(
        steps(
            {"expect": {"match": "a"}, "measure": "first_message"},
            {"expect": {"match": "b"}, "measure": "first_message"},
            {"send": {"text": "c"}},
            {"expect": {"match": "d"}, "measure": "round_trip"},
            {"expect": {"match": "e"}, "measure": "round_trip"},
        )
    ) == [
        "targets[0].conversation[1].measure: conversation[0] measures first_message already",
        "targets[0].conversation[4].measure: conversation[3] measures round_trip already",
    ]


NOT_HEX = "must be hex bytes, two digits each, like '20 02 00'"


def test_a_round_trip_without_a_send_before_it() -> None:
    """round_trip times a match from the send before it: there must be one."""
    assert problems(steps({"expect": {"match": "a"}, "measure": "round_trip"})) == [
        "targets[0].conversation[0].measure: round_trip needs a send step before it"
    ]


def test_bad_hex() -> None:
    """Odd digits, non-hex characters and empty hex are errors at their field."""
    assert problems(
        steps({"send": {"hex": "2 0 0"}}, {"expect": {"hex": "zz"}}, {"expect": {"hex": " "}})
    ) == [
        f"targets[0].conversation[0].send.hex: {NOT_HEX}",
        f"targets[0].conversation[1].expect.hex: {NOT_HEX}",
        "targets[0].conversation[2].expect.hex: must hold at least one byte, like '20 02 00'",
    ]


def test_hex_sends_are_templates_of_whole_bytes() -> None:
    """A hex send takes {conn}, {seq} and captures between whole bytes; checked at load."""
    build(
        steps(
            {"expect": {"json": {"t": "hi"}, "capture": {"tok": "tok"}}},
            {"send": {"hex": "30 {conn}{seq} {tok} ff"}},
        )
    )
    whole = "with {variables} between whole bytes, like '30 {conn} 00'"
    assert problems(
        {
            **steps(
                {"send": {"hex": "3{conn}0"}},
                {"send": {"hex": "30 {nope}"}},
                {"send": {"hex": "zz {seq}"}},
                {"send": {"hex": "c0 {tok}"}},
                {"expect": {"json": {"t": "hi"}, "capture": {"tok": "tok"}}},
                {"expect": {"hex": "20 {tok}"}},
            ),
            "heartbeats": [{"when": {"match": "^2$"}, "answer": {"hex": "03 {x}"}}],
        }
    ) == [
        f"targets[0].conversation[0].send.hex: must be hex bytes, two digits each, {whole}",
        f"targets[0].conversation[2].send.hex: must be hex bytes, two digits each, {whole}",
        f"targets[0].conversation[5].expect.hex: {NOT_HEX}",
    ]
    assert problems(
        {
            **steps(
                {"send": {"hex": "30 {nope}"}},
                {"send": {"hex": "c0 {tok}"}},
                {"expect": {"json": {"t": "hi"}, "capture": {"tok": "tok"}}},
            ),
            "heartbeats": [{"when": {"match": "^2$"}, "answer": {"hex": "03 {x}"}}],
        }
    ) == [
        "targets[0].conversation[0].send.hex: uses {nope}: not conn, seq or a capture",
        "targets[0].conversation[1].send.hex: uses {tok} before a step captures it",
        "targets[0].heartbeats[0].answer.hex: uses {x}: not conn, seq or a capture",
    ]


def test_json_values_are_templates_checked_at_their_path() -> None:
    """A JSON matcher's string values take {conn}, {seq} and earlier captures; numbers do not."""
    build(
        {
            **steps(
                {"expect": {"json": {"t": "hi"}, "capture": {"sub": "id"}}},
                {"expect": {"json": {"id": "{sub}", "c": "{conn}", "n": 1, "odd": "{ x }"}}},
            ),
            "keepalive": {"send": {"text": "k"}, "expect": {"json": {"id": "{sub}-{seq}"}}},
        }
    )
    assert problems(
        {
            **steps(
                {"expect": {"json": {"id": "{sub}"}, "capture": {"sub": "id"}}},
                {"expect": {"json": {"a.b": "{nope}", "k": "{conn}{nada}"}}},
            ),
            "heartbeats": [{"when": {"json": {"k": "{w}"}}, "answer": {"text": "a"}}],
        }
    ) == [
        "targets[0].conversation[0].expect.json.id: uses {sub} before a step captures it",
        'targets[0].conversation[1].expect.json["a.b"]: uses {nope}: not conn, seq or a capture',
        "targets[0].conversation[1].expect.json.k: uses {nada}: not conn, seq or a capture",
        "targets[0].heartbeats[0].when.json.k: uses {w}: not conn, seq or a capture",
    ]


def test_bad_regex() -> None:
    """A regex that does not compile names its field (its template variables aside)."""
    [problem] = problems(steps({"expect": {"match": "({seq}"}}))
    assert problem.startswith(
        "targets[0].conversation[0].expect.match: is not a valid regular expression"
    )


def test_json_paths_values_and_captures() -> None:
    """A bad dotted path, a non-scalar value, a bad capture name, capture without json."""
    assert problems(
        steps(
            {"expect": {"json": {"a..b": 1, "c": [1]}}},
            {"expect": {"json": {"t": 1}, "capture": {"seq": "x", "ok": ".x"}}},
            {"expect": {"match": "x", "capture": {"a": "b"}}},
        )
    ) == [
        'targets[0].conversation[0].expect.json["a..b"]: is not a dotted path like data.items.0.id',
        "targets[0].conversation[0].expect.json.c: must be a string, number, bool or null",
        "targets[0].conversation[1].expect.capture.seq: must be a name like sid (not conn or seq)",
        "targets[0].conversation[1].expect.capture.ok: is not a dotted path like data.items.0.id",
        "targets[0].conversation[2].expect.capture: goes with json "
        "(a regex captures by its named groups)",
    ]


def test_a_matcher_or_send_needs_exactly_one_kind() -> None:
    """A matcher with two kinds (or none), a send with both text and hex."""
    assert problems(
        steps(
            {"expect": {"match": "x", "hex": "00"}},
            {"expect": {}},
            {"send": {"text": "x", "hex": "00"}},
        )
    ) == [
        "targets[0].conversation[0].expect: needs exactly one of match, json or hex",
        "targets[0].conversation[1].expect: needs exactly one of match, json or hex",
        "targets[0].conversation[2].send: needs exactly one of text or hex",
    ]


def test_steps_shape_names_and_options() -> None:
    """A step needs one of send or expect; expect's options on a send; names; repeat."""
    assert problems(
        steps(
            {"name": "a", "send": {"text": "x"}, "expect": {"match": "x"}},
            {"name": "b", "send": {"text": "x"}, "timeout": "1s", "optional": True},
            {"name": "a", "expect": {"match": "x"}, "repeat": 1001},
            {"name": "Bad Name", "expect": {"match": "x"}},
            {"name": "c", "send": {"text": "x"}, "measure": "round_trip", "others": "fail"},
        )
    ) == [
        "targets[0].conversation[0]: needs exactly one of send or expect",
        "targets[0].conversation[1].timeout: applies to expect steps only",
        "targets[0].conversation[1].optional: applies to expect steps only",
        "targets[0].conversation[2].repeat: must be ≤ 1000",
        "targets[0].conversation[3].name: must be 1 to 32 of a-z, 0-9, _ and -"
        " (it becomes a step label)",
        "targets[0].conversation[4].measure: applies to expect steps only",
        "targets[0].conversation[4].others: applies to expect steps only",
    ]


def test_two_steps_with_one_name() -> None:
    """Step names are unique (a default name counts too)."""
    assert problems(
        steps({"expect": {"match": "x"}}, {"name": "step1", "send": {"text": "y"}})
    ) == ["targets[0].conversation[1].name: another step is called 'step1' (conversation[0])"]


def test_an_empty_conversation() -> None:
    """A conversation has at least one step."""
    assert problems({"conversation": []}) == [
        "targets[0].conversation: must have at least 1 item(s)"
    ]


def test_stable_echo_with_a_conversation_and_no_keepalive() -> None:
    """A conversation is never re-sent as a keepalive: the error names the target's field."""
    for mode in ("echo", "message"):
        assert problems(
            steps({"expect": {"match": "x"}}), stable={"connections": 1, "mode": mode}
        ) == [
            "targets[0].keepalive: is needed by scenarios[0].stable.mode echo: the"
            " conversation is not re-sent to keep a connection alive"
        ]


def readme_targets() -> list[dict[str, Any]]:
    """Return every target of the README's Conversations examples."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    # Up to the next heading: the real-protocol examples after it are tested in tests/peers.
    section = re.split(r"\n##+ ", readme.split("### Conversations", 1)[1], maxsplit=1)[0]
    targets: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL):
        document = yaml.safe_load(block)
        targets.extend(document["targets"] if isinstance(document, dict) else document)
    return targets


def test_the_readmes_examples_load() -> None:
    """Every example target in the README's Conversations section is a valid config."""
    targets = readme_targets()
    assert [t["name"] for t in targets] == ["socketio", "graphql", "cable", "mqtt", "echo"]
    config = parse_config(
        {
            "targets": targets,
            "scenarios": [{"name": "s", "spike": {"connections": 1}, "stable": {"connections": 1}}],
        }
    )
    cable = config.target("cable")
    assert cable.conversation is not None
    assert cable.conversation[3].send is not None
    assert '\\"text\\":\\"hi {conn}\\"' in (cable.conversation[3].send.text or "")
