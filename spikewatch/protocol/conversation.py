"""A target's conversation, compiled once per target: steps, matchers, sends (issue 13).

The config (``config/conversation.py``) says what a probe sends and expects; this is the
same, built once per target into immutable objects the exchange (``exchange.py``) runs
for every connection. Nothing here reads a clock or touches a socket.

- A :class:`Template` renders ``{conn}``, ``{seq}`` and captures; literal text otherwise.
- Matchers decide whether a message is the one a step awaits, and write its captures:
  :class:`TextMatch` (a regex, ``re.search``), :class:`JsonMatch` (fields of a JSON
  object), :class:`HexMatch` (a binary message's first bytes).
- Sends render a frame: :class:`TextSend`, :class:`BinarySend` (fixed bytes),
  :class:`HexSend` (a hex template whose variables fill whole bytes; a capture that is
  not hex bytes raises :class:`TemplateError`).
- :class:`ConversationStep` is one ``send`` or ``expect``; :class:`Conversation` the
  steps, the heartbeat rules and the keepalive.

The welcome and echo of the short form compile to the same objects
(:func:`welcome_echo_conversation`).

Past 500 lines on purpose: the language's runtime half (templates, three matchers, three
sends, the steps) is one vocabulary that the exchange and the spec import together; each
part is small and read beside the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from spikewatch.core.echo_template import BUILTIN_NAMES, split_template
from spikewatch.errors import SpikewatchError

#: How long a captured value may be; longer ones are cut (a capture is a session id, a
#: subscription id, a version: not a payload).
MAX_CAPTURE_CHARS = 256

#: How much of an unexpected message is kept as the example in the run's detail.
EXAMPLE_CHARS = 120

#: What a capture must be to fill a hex template: whole bytes, spaces between them allowed.
_HEX_BYTES = re.compile(r"(?:\s*[0-9A-Fa-f]{2})*\s*")


class TemplateError(SpikewatchError, ValueError):
    """A template cannot be rendered: a capture's value does not fit where it stands."""


class Stage(IntEnum):
    """What the probe awaits; the exchange's ``step`` (``exchange.Step`` is this enum).

    ``WELCOME`` and ``ECHO`` are the conversation's stages of the short form (a welcome,
    an echo), ``CONVERSATION`` any other step of a conversation.
    """

    UPGRADE = 0
    CONVERSATION = 1
    WELCOME = 2
    ECHO = 3
    HELD = 4
    CLOSING = 5
    OVER = 6


def example_of(data: str | bytes) -> str:
    """Return what a detail quotes of a message: text as it is, binary as hex, both cut."""
    if isinstance(data, str):
        return repr(data[:EXAMPLE_CHARS])
    return f"binary {data[: EXAMPLE_CHARS // 3].hex(' ')!r}"


# -- templates ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """Text with variables, split once: literal, name, literal, ..., literal."""

    parts: tuple[str, ...]

    @classmethod
    def of(cls, text: str, captures: frozenset[str] = frozenset()) -> Template:
        """Compile ``text``: ``{conn}``, ``{seq}`` and the names in ``captures`` are variables."""
        return cls(split_template(text, BUILTIN_NAMES | captures))

    @property
    def constant(self) -> str | None:
        """Return the text when it has no variables, else None."""
        return self.parts[0] if len(self.parts) == 1 else None

    def render(
        self, conn: int, seq: int, captures: Mapping[str, str], *, escape: bool = False
    ) -> str:
        """Return the text with every variable filled (captures ``re.escape``d if ``escape``)."""
        parts = self.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            name = parts[i]
            if name == "conn":
                out.append(str(conn))
            elif name == "seq":
                out.append(str(seq))
            else:
                value = captures.get(name, "")
                out.append(re.escape(value) if escape else value)
            out.append(parts[i + 1])
        return "".join(out)


# -- matchers -------------------------------------------------------------------------


class Matcher(Protocol):
    """Decides whether a message is the one awaited; on a match, writes its captures."""

    def match(self, data: str | bytes, conn: int, seq: int, captures: dict[str, str]) -> bool:
        """Return whether ``data`` matches; store what it captures in ``captures``."""

    def describe(self) -> str:
        """Return what it matches, as a detail says it."""


class TextMatch:
    """A text message on which a regex finds a match; its named groups are captures."""

    __slots__ = ("_decode_binary", "_groups", "_pattern", "_source", "_template")

    def __init__(
        self,
        regex: str | re.Pattern[str],
        captures: frozenset[str] = frozenset(),
        *,
        decode_binary: bool = False,
    ) -> None:
        if isinstance(regex, re.Pattern):
            self._source = regex.pattern
            self._pattern: re.Pattern[str] | None = regex
            self._template = Template((regex.pattern,))
        else:
            self._source = regex
            self._template = Template.of(regex, captures)
            constant = self._template.constant
            self._pattern = re.compile(constant) if constant is not None else None
        # The groups, from the template with placeholders standing for the variables.
        stand_ins = dict.fromkeys(self._template.parts[1::2], "0")
        groups = re.compile(self._template.render(0, 0, stand_ins)).groupindex
        self._groups = tuple(groups)
        #: The short form's welcome and echo matched a binary message's text (decoded).
        self._decode_binary = decode_binary

    def match(self, data: str | bytes, conn: int, seq: int, captures: dict[str, str]) -> bool:
        """Return whether the regex finds a match in a text message."""
        if not isinstance(data, str):
            if not self._decode_binary:
                return False
            data = data.decode("utf-8", "replace")
        pattern = self._pattern
        if pattern is None:
            pattern = re.compile(self._template.render(conn, seq, captures, escape=True))
        found = pattern.search(data)
        if found is None:
            return False
        for name in self._groups:
            value = found.group(name)
            if value is not None:
                captures[name] = value[:MAX_CAPTURE_CHARS]
        return True

    def describe(self) -> str:
        """Return the regex (its template), quoted."""
        return repr(self._source)


def parse_path(path: str) -> tuple[str | int, ...]:
    """Return a dotted JSON path's segments (``a.b.0.c``): integers index lists."""
    return tuple(int(part) if part.isdigit() else part for part in path.split("."))


_MISSING = object()


def _at(document: object, path: tuple[str | int, ...]) -> object:
    for key in path:
        if isinstance(document, dict):
            document = document.get(str(key), _MISSING)
        elif isinstance(document, list) and isinstance(key, int) and key < len(document):
            document = document[key]
        else:
            return _MISSING
        if document is _MISSING:
            return _MISSING
    return document


def _same(value: object, wanted: object) -> bool:
    # JSON true is not 1, and 1 is 1.0: compare bools by identity, numbers by value.
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, int | float) and isinstance(value, int | float):
        return value == wanted
    return type(value) is type(wanted) and value == wanted


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


class JsonMatch:
    """A text message that is a JSON object with these fields equal to these scalars.

    A string value is a template (``{conn}``, ``{seq}``, the captures in ``known``),
    rendered per message and compared as a string.
    """

    __slots__ = ("_captures", "_fields", "_templated", "_text")

    def __init__(
        self,
        fields: Mapping[str, Any],
        captures: Mapping[str, str] | None = None,
        *,
        known: frozenset[str] = frozenset(),
    ) -> None:
        plain: list[tuple[tuple[str | int, ...], Any]] = []
        templated: list[tuple[tuple[str | int, ...], Template]] = []
        for p, v in fields.items():
            template = Template.of(v, known) if isinstance(v, str) else None
            if template is None or template.constant is not None:
                plain.append((parse_path(p), v))
            else:
                templated.append((parse_path(p), template))
        self._fields = tuple(plain)
        self._templated = tuple(templated)
        self._captures = tuple((n, parse_path(p)) for n, p in (captures or {}).items())
        self._text = json.dumps(dict(fields), separators=(",", ":"))

    def match(self, data: str | bytes, conn: int, seq: int, captures: dict[str, str]) -> bool:
        """Return whether ``data`` parses to an object with every field as wanted."""
        if not isinstance(data, str):
            return False
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python goes
            return False
        if not isinstance(document, dict):
            return False
        for path, wanted in self._fields:
            if not _same(_at(document, path), wanted):
                return False
        for path, template in self._templated:
            if _at(document, path) != template.render(conn, seq, captures):
                return False
        for name, path in self._captures:
            value = _at(document, path)
            if value is not _MISSING and not isinstance(value, dict | list):
                captures[name] = _as_text(value)[:MAX_CAPTURE_CHARS]
        return True

    def describe(self) -> str:
        """Return the fields, as JSON."""
        return f"json {self._text}"


class HexMatch:
    """A binary message whose bytes start with these."""

    __slots__ = ("_prefix",)

    def __init__(self, prefix: bytes) -> None:
        self._prefix = prefix

    def match(self, data: str | bytes, conn: int, seq: int, captures: dict[str, str]) -> bool:
        """Return whether a binary message starts with the prefix."""
        return isinstance(data, bytes) and data.startswith(self._prefix)

    def describe(self) -> str:
        """Return the prefix, as hex."""
        return f"hex {self._prefix.hex(' ')!r}"


# -- sends --------------------------------------------------------------------------------


class Send(Protocol):
    """Renders what a step (a heartbeat answer, a keepalive) sends."""

    binary: bool

    def render(self, conn: int, seq: int, captures: Mapping[str, str]) -> bytes:
        """Return the message's bytes (a text message UTF-8 encoded).

        TemplateError: a capture does not fit (a hex template's capture is not hex bytes).
        """


class TextSend:
    """A text message from a template."""

    __slots__ = ("_constant", "_template", "binary")

    def __init__(self, template: str, captures: frozenset[str] = frozenset()) -> None:
        self._template = Template.of(template, captures)
        constant = self._template.constant
        self._constant = constant.encode() if constant is not None else None
        self.binary = False

    def render(self, conn: int, seq: int, captures: Mapping[str, str]) -> bytes:
        """Return the text with its variables filled, UTF-8 encoded."""
        if self._constant is not None:
            return self._constant
        return self._template.render(conn, seq, captures).encode()


class BinarySend:
    """A binary message of fixed bytes (no templates)."""

    __slots__ = ("binary", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.binary = True

    def render(self, conn: int, seq: int, captures: Mapping[str, str]) -> bytes:
        """Return the bytes."""
        return self.data


def _number_hex(number: int) -> str:
    """Return ``number`` as hex digits of whole bytes, big-endian, as few as it takes."""
    digits = f"{number:x}"
    return digits if len(digits) % 2 == 0 else "0" + digits


class HexSend:
    """A binary message from a hex template (the config checked its shape: whole bytes).

    ``{conn}`` and ``{seq}`` fill their number as whole bytes, big-endian, as few as it
    takes (300 is ``01 2c``); a capture fills its value, which must itself be hex bytes.
    """

    __slots__ = ("_constant", "_template", "binary")

    def __init__(self, template: str, captures: frozenset[str] = frozenset()) -> None:
        self._template = Template.of(template, captures)
        constant = self._template.constant
        self._constant = None if constant is None else bytes.fromhex("".join(constant.split()))
        self.binary = True

    def render(self, conn: int, seq: int, captures: Mapping[str, str]) -> bytes:
        """Return the bytes with every variable filled; TemplateError for a non-hex capture."""
        if self._constant is not None:
            return self._constant
        parts = self._template.parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            name = parts[i]
            if name == "conn":
                out.append(_number_hex(conn))
            elif name == "seq":
                out.append(_number_hex(seq))
            else:
                value = captures.get(name, "")
                if not _HEX_BYTES.fullmatch(value):
                    shown = value[: EXAMPLE_CHARS // 3]
                    raise TemplateError(f"{{{name}}} is {shown!r}, not hex bytes")
                out.append(value)
            out.append(parts[i + 1])
        return bytes.fromhex("".join("".join(out).split()))


# -- steps -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationStep:
    """One ``send`` or ``expect`` (exactly one of the two is set)."""

    name: str
    send: Send | None = None
    expect: Matcher | None = None
    timeout: float = 2.0
    others_fail: bool = False
    optional: bool = False
    repeat: int = 1
    #: The exchange's stage while this step awaits its message.
    stage: Stage = Stage.CONVERSATION
    #: What details call the step: "no {awaited} within", "during {during}", "no message
    #: matched {pattern_of} within".
    awaited: str = ""
    during: str = ""
    pattern_of: str = ""

    def __post_init__(self) -> None:
        quoted = f"step {self.name!r}"
        for name, default in (
            ("awaited", f"message for {quoted}"),
            ("during", quoted),
            ("pattern_of", quoted),
        ):
            if not getattr(self, name):
                object.__setattr__(self, name, default)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """When a message matches ``when``, answer ``answer`` (while a step waits, and held)."""

    when: Matcher
    answer: Send


@dataclass(frozen=True, slots=True)
class KeepaliveMessage:
    """What a stable connection sends every interval, and what answers it."""

    send: Send
    expect: Matcher


@dataclass(frozen=True, slots=True)
class Conversation:
    """A target's steps, heartbeats and keepalive, compiled once."""

    steps: tuple[ConversationStep, ...] = ()
    heartbeats: tuple[Heartbeat, ...] = ()
    keepalive: KeepaliveMessage | None = None
    #: The index of the step whose match times "first message", and of the one whose
    #: match times the round trip (-1: none).
    first_message: int = -1
    round_trip: int = -1
    #: The longest the steps may take (every expect step's timeout, repeats included).
    bound: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        bound = sum(s.timeout * s.repeat for s in self.steps if s.expect is not None)
        object.__setattr__(self, "bound", bound)


def default_measures(
    steps: tuple[ConversationStep, ...], first_message: int | None, round_trip: int | None
) -> tuple[int, int]:
    """Return the measured steps: those declared, else the defaults (design, issue 13).

    first message: the first expect step when no send precedes it; round trip: the last
    expect step that directly follows a send.
    """
    if first_message is None:
        first_message = -1
        if steps and steps[0].expect is not None:
            first_message = 0
    if round_trip is None:
        round_trip = -1
        for i in range(1, len(steps)):
            if steps[i].expect is not None and steps[i - 1].send is not None:
                round_trip = i
    return first_message, round_trip


# -- the short form ----------------------------------------------------------------------


#: The short form written by hand: the echo payload and pattern of ``(conn, seq)``.
_EchoFor = Callable[[int, int], tuple[str, re.Pattern[str]]]


class EchoForSend:
    """The echo payload that an ``echo_for(conn, seq)`` gives (a hand-written expectation)."""

    __slots__ = ("_echo_for", "binary")

    def __init__(self, echo_for: _EchoFor) -> None:
        self._echo_for = echo_for
        self.binary = False

    def render(self, conn: int, seq: int, captures: Mapping[str, str]) -> bytes:
        """Return the payload."""
        return self._echo_for(conn, seq)[0].encode()


class EchoForMatch:
    """The echo pattern that an ``echo_for(conn, seq)`` gives."""

    __slots__ = ("_echo_for",)

    def __init__(self, echo_for: _EchoFor) -> None:
        self._echo_for = echo_for

    def match(self, data: str | bytes, conn: int, seq: int, captures: dict[str, str]) -> bool:
        """Return whether the message's text matches the echo pattern."""
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        return self._echo_for(conn, seq)[1].search(text) is not None

    def describe(self) -> str:
        """Return what it matches."""
        return "the echo pattern"


def welcome_echo_conversation(
    welcome: re.Pattern[str] | None,
    welcome_timeout: float,
    echo: tuple[Send, Matcher] | None,
    echo_timeout: float,
) -> Conversation:
    """Return the conversation of the short form: a welcome, then one echo.

    Its steps keep today's names (``welcome``, ``echo``), stages and details.
    """
    steps: list[ConversationStep] = []
    if welcome is not None:
        steps.append(
            ConversationStep(
                "welcome",
                expect=TextMatch(welcome, decode_binary=True),
                timeout=welcome_timeout,
                others_fail=True,
                stage=Stage.WELCOME,
                awaited="welcome",
                during="the welcome",
            )
        )
    keepalive = None
    if echo is not None:
        send, match = echo
        steps.append(ConversationStep("echo", send=send, stage=Stage.ECHO))
        steps.append(
            ConversationStep(
                "echo",
                expect=match,
                timeout=echo_timeout,
                stage=Stage.ECHO,
                awaited="echo answer",
                during="the echo",
                pattern_of="the echo pattern",
            )
        )
        keepalive = KeepaliveMessage(send, match)
    first, rtt = default_measures(tuple(steps), None, None)
    return Conversation(tuple(steps), keepalive=keepalive, first_message=first, round_trip=rtt)


def echo_for_messages(
    echo_for: Callable[[int, int], tuple[str, re.Pattern[str]]],
) -> tuple[Send, Matcher]:
    """Return the echo's send and match from an ``echo_for(conn, seq)``."""
    return EchoForSend(echo_for), EchoForMatch(echo_for)
