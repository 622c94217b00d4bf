"""A target's ``conversation``, ``heartbeats`` and ``keepalive`` (issue 13).

The language (README, "Conversations"): ordered steps, each a ``send`` (a text
template, or a hex template whose variables fill whole bytes) or an ``expect`` (a regex,
JSON fields whose string values are templates, or a hex prefix) with its timeout; named
captures usable by later steps; heartbeat rules answered from the upgrade on (while a
step waits too); a keepalive message for stable connections. Each model checks itself;
:func:`conversation_problems` checks what spans steps (a capture used before a step
defines it, an unknown template variable, two steps measuring the same thing), with field
paths relative to the target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection, compile_regex
from spikewatch.config.problems import Problems, invalid, path_key
from spikewatch.core.echo_template import BUILTIN_NAMES, split_template, template_names

__all__ = [
    "MAX_REPEAT",
    "HeartbeatConfig",
    "KeepaliveConfig",
    "MatcherConfig",
    "SendConfig",
    "StepConfig",
    "conversation_problems",
    "parse_hex",
]

#: The most times one step may repeat.
MAX_REPEAT = 1000

_STEP_NAME = re.compile(r"[a-z0-9_-]{1,32}")
_CAPTURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_SEGMENT = re.compile(r"[^.\s]+")


def parse_hex(text: str) -> bytes:
    """Return the bytes ``text`` spells in hex (spaces optional); ValueError if it does not."""
    digits = "".join(text.split())
    if not digits:
        raise ValueError("must hold at least one byte, like '20 02 00'")
    if len(digits) % 2 or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
        raise ValueError("must be hex bytes, two digits each, like '20 02 00'")
    return bytes.fromhex(digits)


def _check_hex(value: str) -> str:
    parse_hex(value)
    return value


def _check_hex_template(value: str) -> str:
    """Check a hex send: hex bytes, with ``{variables}`` standing for whole bytes."""
    parts = split_template(value, set(template_names(value)))
    if len(parts) == 1:
        return _check_hex(value)
    for literal in parts[::2]:
        digits = "".join(literal.split())
        if len(digits) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", digits):
            raise ValueError(
                "must be hex bytes, two digits each, with {variables} between whole bytes, "
                "like '30 {conn} 00'"
            )
    return value


def _check_step_name(value: str) -> str:
    if not _STEP_NAME.fullmatch(value):
        raise ValueError("must be 1 to 32 of a-z, 0-9, _ and - (it becomes a step label)")
    return value


def _check_path(path: str) -> str | None:
    if not all(_PATH_SEGMENT.fullmatch(part) for part in path.split(".")):
        return "is not a dotted path like data.items.0.id"
    return None


class MatcherConfig(ConfigSection):
    """What a message must be: exactly one of ``match``, ``json`` or ``hex``."""

    # ``json`` would shadow BaseModel.json: the field is json_fields, called json in YAML.
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, populate_by_name=True
    )

    #: A regex, ``re.search``ed on a text message; its named groups are captures.
    match: str | None = None
    #: Dotted paths of a JSON object (a text message) and the scalars they must equal.
    json_fields: dict[str, Any] | None = Field(default=None, alias="json")
    #: With ``json``: capture name → dotted path of a scalar.
    capture: dict[str, str] | None = None
    #: A binary message's first bytes, in hex.
    hex: Annotated[str, AfterValidator(_check_hex)] | None = None

    @model_validator(mode="after")
    def _check_matcher(self) -> Self:
        problems: Problems = []
        kinds = [k for k in ("match", "json_fields", "hex") if getattr(self, k) is not None]
        if len(kinds) != 1:
            problems.append(("", "needs exactly one of match, json or hex"))
        if self.match is not None:
            try:
                compile_regex(self.regex_skeleton)
            except ValueError as exc:
                problems.append(("match", str(exc)))
        for path, value in (self.json_fields or {}).items():
            problem = _check_path(path)
            if problem is not None:
                problems.append((f"json{path_key(path)}", problem))
            elif not isinstance(value, str | int | float | bool) and value is not None:
                problems.append((f"json{path_key(path)}", "must be a string, number, bool or null"))
        if self.capture is not None and self.json_fields is None:
            problems.append(("capture", "goes with json (a regex captures by its named groups)"))
        for name, path in (self.capture or {}).items():
            at = f"capture{path_key(name)}"
            if not _CAPTURE_NAME.fullmatch(name) or name in BUILTIN_NAMES:
                problems.append((at, "must be a name like sid (not conn or seq)"))
            problem = _check_path(path)
            if problem is not None:
                problems.append((at, problem))
        if problems:
            raise invalid(problems)
        return self

    @property
    def regex_skeleton(self) -> str:
        """Return ``match`` with every ``{identifier}`` standing as ``0`` (for checks)."""
        assert self.match is not None
        parts = split_template(self.match, set(template_names(self.match)))
        return "0".join(parts[::2])

    @property
    def captures(self) -> tuple[str, ...]:
        """Return the names this matcher captures."""
        if self.match is not None:
            groups = re.compile(self.regex_skeleton).groupindex
            return tuple(name for name in groups if name not in BUILTIN_NAMES)
        return tuple(self.capture or ())

    @property
    def templates(self) -> dict[str, str]:
        """Return the templated fields, by field path (``match``, ``json.<path>``)."""
        if self.match is not None:
            return {"match": self.match}
        return {
            f"json{path_key(path)}": value
            for path, value in (self.json_fields or {}).items()
            if isinstance(value, str)
        }


class SendConfig(ConfigSection):
    """A message to send: exactly one of ``text`` (a template) or ``hex`` (binary)."""

    text: str | None = None
    #: Hex bytes; ``{conn}``, ``{seq}`` and captures fill whole bytes.
    hex: Annotated[str, AfterValidator(_check_hex_template)] | None = None

    @model_validator(mode="after")
    def _check_send(self) -> Self:
        if (self.text is None) == (self.hex is None):
            raise invalid([("", "needs exactly one of text or hex")])
        return self

    @property
    def templates(self) -> dict[str, str]:
        """Return the templated fields, by field name."""
        if self.text is not None:
            return {"text": self.text}
        assert self.hex is not None  # exactly one of the two (checked above)
        return {"hex": self.hex}


class StepConfig(ConfigSection):
    """One step: a ``send``, or an ``expect`` with its options."""

    name: Annotated[str, AfterValidator(_check_step_name)] | None = None
    send: SendConfig | None = None
    expect: MatcherConfig | None = None
    timeout: PositiveDuration = 2.0
    measure: Literal["first_message", "round_trip"] | None = None
    others: Literal["skip", "fail"] = "skip"
    optional: bool = False
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT)

    @model_validator(mode="after")
    def _check_step(self) -> Self:
        problems: Problems = []
        if (self.send is None) == (self.expect is None):
            problems.append(("", "needs exactly one of send or expect"))
        elif self.send is not None:
            # By value, not by whether it was set: a worker gets every field (the target
            # travels as a full dump, engine/worker_messages.py).
            fields = type(self).model_fields
            problems.extend(
                (option, "applies to expect steps only")
                for option in ("timeout", "measure", "others", "optional")
                if getattr(self, option) != fields[option].default
            )
        if problems:
            raise invalid(problems)
        return self


class HeartbeatConfig(ConfigSection):
    """When a message matches ``when``, answer ``answer``."""

    when: MatcherConfig
    answer: SendConfig


class KeepaliveConfig(ConfigSection):
    """What a stable connection sends each ``stable.ping_interval``, and its answer."""

    send: SendConfig
    expect: MatcherConfig


def step_names(steps: Iterable[StepConfig]) -> list[str]:
    """Return each step's name: its own, else ``step<N>`` (1-based)."""
    return [step.name or f"step{i}" for i, step in enumerate(steps, 1)]


def _uses(at: str, templates: Mapping[str, str], known: set[str], later: set[str]) -> Problems:
    problems: Problems = []
    for field, text in templates.items():
        for name in template_names(text):
            if name in known:
                continue
            where = f"{at}.{field}"
            if name in later:
                problems.append((where, f"uses {{{name}}} before a step captures it"))
            else:
                problems.append((where, f"uses {{{name}}}: not conn, seq or a capture"))
    return problems


def conversation_problems(
    steps: tuple[StepConfig, ...],
    heartbeats: tuple[HeartbeatConfig, ...],
    keepalive: KeepaliveConfig | None,
) -> Problems:
    """Return what spans steps: names, captures and template variables, measures."""
    problems: Problems = []
    every_capture = {
        name for step in steps if step.expect is not None for name in step.expect.captures
    }
    known = set(BUILTIN_NAMES)
    seen_names: dict[str, int] = {}
    measured: dict[str, int] = {}
    for i, (step, name) in enumerate(zip(steps, step_names(steps), strict=True)):
        at = f"conversation[{i}]"
        if name in seen_names:
            problems.append(
                (
                    f"{at}.name",
                    f"another step is called {name!r} (conversation[{seen_names[name]}])",
                )
            )
        seen_names.setdefault(name, i)
        if step.measure is not None:
            if step.measure in measured:
                first = measured[step.measure]
                problems.append(
                    (f"{at}.measure", f"conversation[{first}] measures {step.measure} already")
                )
            measured.setdefault(step.measure, i)
            if step.measure == "round_trip" and not any(s.send for s in steps[:i]):
                problems.append((f"{at}.measure", "round_trip needs a send step before it"))
        if step.send is not None:
            problems.extend(_uses(f"{at}.send", step.send.templates, known, every_capture))
        else:
            assert step.expect is not None  # a step has exactly one (StepConfig checks)
            problems.extend(_uses(f"{at}.expect", step.expect.templates, known, every_capture))
            known.update(step.expect.captures)
    for i, rule in enumerate(heartbeats):
        at = f"heartbeats[{i}]"
        problems.extend(_uses(f"{at}.when", rule.when.templates, known, set()))
        problems.extend(_uses(f"{at}.answer", rule.answer.templates, known, set()))
    if keepalive is not None:
        problems.extend(_uses("keepalive.send", keepalive.send.templates, known, set()))
        problems.extend(_uses("keepalive.expect", keepalive.expect.templates, known, set()))
    return problems
