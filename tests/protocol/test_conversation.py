"""Conversations, sans I/O: matchers, templates, and the exchange fed session events by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.protocol.conversation import (
    MAX_CAPTURE_CHARS,
    BinarySend,
    Conversation,
    ConversationStep,
    EchoForMatch,
    Heartbeat,
    HexMatch,
    HexSend,
    JsonMatch,
    KeepaliveMessage,
    Matcher,
    Template,
    TemplateError,
    TextMatch,
    TextSend,
    default_measures,
    example_of,
)
from spikewatch.protocol.exchange import Keepalive, ProbeExchange, Step, conversation_of
from spikewatch.protocol.frames import Close, Opcode
from spikewatch.protocol.session import ClientSession, Upgraded
from tests.protocol.test_exchange import HEAD, KEY
from tests.protocol.test_session import client_frames


@dataclass(frozen=True)
class Expect:
    """What the exchange reads of a ConnectionSpec: the handshake timeout, the conversation."""

    conversation: Conversation
    handshake_timeout: float = 5.0


def exchange(
    conversation: Conversation, *, keep_open: bool = False, keepalive: Keepalive | None = None
) -> ProbeExchange:
    """An exchange of connection 3 over an opened session, started at 10 and upgraded at 10.5."""
    session = ClientSession(b"GET / HTTP/1.1\r\n\r\n", KEY, (), 10_000)
    session.data_to_send()
    session.receive_data(HEAD)
    assert isinstance(session.events_received()[0], Upgraded)
    ex = ProbeExchange(
        Attempt(Phase.SPIKE, 3),
        session,
        Expect(conversation),
        keep_open=keep_open,
        keepalive=keepalive,
    )
    ex.started(10.0)
    ex.upgraded(10.5)
    return ex


def sent(ex: ProbeExchange) -> list[tuple[int, bytes]]:
    return client_frames(ex.session.data_to_send())


def send(
    name: str, text: str, captures: frozenset[str] = frozenset(), *, repeat: int = 1
) -> ConversationStep:
    return ConversationStep(name, send=TextSend(text, captures), repeat=repeat)


def expect(
    name: str,
    matcher: Matcher,
    *,
    timeout: float = 2.0,
    others_fail: bool = False,
    optional: bool = False,
    repeat: int = 1,
) -> ConversationStep:
    return ConversationStep(
        name,
        expect=matcher,
        timeout=timeout,
        others_fail=others_fail,
        optional=optional,
        repeat=repeat,
    )


def conversation(
    *steps: ConversationStep,
    heartbeats: tuple[Heartbeat, ...] = (),
    keepalive: KeepaliveMessage | None = None,
    first_message: int | None = None,
    round_trip: int | None = None,
) -> Conversation:
    first, rtt = default_measures(steps, first_message, round_trip)
    return Conversation(steps, heartbeats, keepalive, first_message=first, round_trip=rtt)


SID = frozenset({"sid"})
#: hello (captures sid) → auth with it → authed (the sid, escaped, in the regex).
SESSION = conversation(
    expect("hello", JsonMatch({"type": "hello"}, {"sid": "sid"})),
    send("auth", '{"op":"auth","sid":"{sid}","conn":{conn},"seq":{seq}}', SID),
    expect("authed", TextMatch("^ok {sid} {seq}$", SID)),
)


# -- templates and matchers ---------------------------------------------------------------


def test_a_template_fills_builtins_and_captures_and_keeps_other_braces() -> None:
    """{conn}, {seq} and known captures are filled; JSON braces and unknown names stay."""
    template = Template.of('{"c":{conn},"s":{seq},"id":"{sid}","x":{other},"y":{}}', SID)
    assert template.constant is None
    text = template.render(3, 7, {"sid": "a.b"})
    assert text == '{"c":3,"s":7,"id":"a.b","x":{other},"y":{}}'
    assert template.render(3, 7, {"sid": "a.b"}, escape=True).endswith(
        '"id":"a\\.b","x":{other},"y":{}}'
    )
    assert Template.of("plain {x}").constant == "plain {x}"


def test_a_regex_captures_named_groups_cut_to_the_bound() -> None:
    """Named groups become captures (at most MAX_CAPTURE_CHARS); unmatched groups are not."""
    matcher = TextMatch("^(?P<sid>x+)(?P<rest>-y)?")
    captures: dict[str, str] = {}
    assert matcher.match("x" * 300, 1, 1, captures)
    assert captures == {"sid": "x" * MAX_CAPTURE_CHARS}
    assert not matcher.match("nope", 1, 1, captures)
    assert not matcher.match(b"xxx", 1, 1, captures), "a text matcher never matches binary"
    assert matcher.describe() == repr("^(?P<sid>x+)(?P<rest>-y)?")


def test_a_templated_regex_escapes_captures() -> None:
    """A captured value is matched literally in a later regex."""
    matcher = TextMatch("^{sid}:{conn}$", SID)
    assert matcher.match("a.b:4", 4, 1, {"sid": "a.b"})
    assert not matcher.match("aXb:4", 4, 1, {"sid": "a.b"})
    assert matcher.describe() == repr("^{sid}:{conn}$")


def test_a_capture_may_be_quantified_in_a_later_regex() -> None:
    """A capture stands for text when the regex is compiled once for its groups."""
    matcher = TextMatch("^{sid}+(?P<n>\\d)$", SID)
    captures = {"sid": "ab"}
    assert matcher.match("abbb7", 1, 1, captures)
    assert captures["n"] == "7"


def test_the_short_forms_text_match_reads_binary_as_text() -> None:
    """Today's welcome and echo matched a binary message's text: kept for them."""
    assert TextMatch(re.compile("hi"), decode_binary=True).match(b"hi", 1, 1, {})


@pytest.mark.parametrize(
    ("message", "matches"),
    [
        ('{"type":"next","p":{"d":[{"n":1}]},"ok":true,"none":null}', True),
        ('{"type":"next","p":{"d":[{"n":1.0}]},"ok":true,"none":null}', True),
        ('{"type":"next","p":{"d":[{"n":1}]},"ok":1,"none":null}', False),
        ('{"type":"next","p":{"d":[{"n":"1"}]},"ok":true,"none":null}', False),
        ('{"type":"next","p":{"d":[]},"ok":true,"none":null}', False),
        ('{"type":"next","p":{"d":{"0":{"n":1}}},"ok":true,"none":null}', True),
        ('{"type":"next","p":"d","ok":true,"none":null}', False),
        ('{"type":"next","p":{"d":[{"n":1}]},"ok":true}', False),
        ('["type","next"]', False),
        ("not json", False),
        ("[" * 100_000, False),
        (b'{"type":"next"}', False),
    ],
)
def test_a_json_match_compares_each_path_with_its_scalar(
    message: str | bytes, matches: bool
) -> None:
    """Paths index objects and lists; true is not 1, 1 is 1.0, "1" is not 1; text only."""
    matcher = JsonMatch({"type": "next", "p.d.0.n": 1, "ok": True, "none": None})
    assert matcher.match(message, 1, 1, {}) is matches


def test_a_json_match_captures_scalars_as_text() -> None:
    """Strings without quotes, numbers and bools as JSON; objects and missing paths not."""
    matcher = JsonMatch(
        {"t": "v"},
        {"id": "data.id", "n": "data.n", "b": "data.b", "o": "data", "gone": "x.y"},
    )
    captures: dict[str, str] = {}
    assert matcher.match('{"t":"v","data":{"id":"abc","n":4.5,"b":false}}', 1, 1, captures)
    assert captures == {"id": "abc", "n": "4.5", "b": "false"}
    assert matcher.describe() == 'json {"t":"v"}'


def test_a_json_matchers_string_values_are_templates() -> None:
    """{conn}, {seq} and known captures fill a string value, compared with strings only."""
    matcher = JsonMatch({"id": "{sub}", "c": "c{conn}-{seq}", "x": "{x}"}, known=SID | {"sub"})
    assert matcher.match('{"id":"a.b","c":"c3-7","x":"{x}"}', 3, 7, {"sub": "a.b"})
    assert not matcher.match('{"id":"aXb","c":"c3-7","x":"{x}"}', 3, 7, {"sub": "a.b"})
    assert not matcher.match('{"id":"a.b","c":"c3-8","x":"{x}"}', 3, 7, {"sub": "a.b"})
    assert not matcher.match('{"id":"a.b","c":"c3-7"}', 3, 7, {"sub": "a.b"})
    assert JsonMatch({"n": "{conn}"}).match('{"n":"3"}', 3, 1, {})
    assert not JsonMatch({"n": "{conn}"}).match('{"n":3}', 3, 1, {}), "a string, not 3"
    assert matcher.describe() == 'json {"id":"{sub}","c":"c{conn}-{seq}","x":"{x}"}'


def test_a_hex_send_fills_whole_bytes() -> None:
    """{conn} and {seq} are big-endian whole bytes; a capture must be hex bytes itself."""
    hex_send = HexSend("30 {conn}{seq} {tok} ff", frozenset({"tok"}))
    assert hex_send.binary
    assert hex_send.render(5, 300, {"tok": "0A bc"}) == bytes.fromhex("30 05 01 2c 0a bc ff")
    assert hex_send.render(5, 1, {}) == bytes.fromhex("30 05 01 ff"), "no capture: no bytes"
    for bad in ("abc", "zz", "0x01"):
        with pytest.raises(TemplateError, match=rf"^\{{tok\}} is '{bad}', not hex bytes$"):
            hex_send.render(5, 1, {"tok": bad})
    assert HexSend("10 0c").render(1, 1, {}) == b"\x10\x0c"


def test_a_hex_match_takes_a_binary_prefix_only() -> None:
    """A binary message starting with the bytes matches; a text message never does."""
    matcher = HexMatch(b"\x20\x02")
    assert matcher.match(b"\x20\x02\x00\x00", 1, 1, {})
    assert not matcher.match(b"\x20\x03", 1, 1, {})
    assert not matcher.match(" \x02", 1, 1, {})
    assert matcher.describe() == "hex '20 02'"


def test_examples_quote_text_and_show_binary_as_hex() -> None:
    """A detail quotes text as it is and binary as hex."""
    assert example_of("hi") == "'hi'"
    assert example_of(b"\x01\xff") == "binary '01 ff'"


def test_default_measures() -> None:
    """first message: the first expect before any send; round trip: the last expect after a send."""
    x, s = expect("x", HexMatch(b"x")), send("s", "s")
    assert default_measures((x, s, x, s, x), None, None) == (0, 4)
    assert default_measures((s, x, x), None, None) == (-1, 1)
    assert default_measures((x, x), None, None) == (0, -1)
    assert default_measures((x, s, x), 2, 0) == (2, 0)


def test_the_bound_sums_every_expect_with_its_repeats() -> None:
    """A conversation's bound is the sum of its expect steps' timeouts times their repeats."""
    c = conversation(send("s", "x"), expect("a", HexMatch(b"x"), timeout=1.5, repeat=2))
    assert c.bound == 3.0


# -- the exchange runs the conversation ------------------------------------------------------


def test_three_steps_with_a_capture() -> None:
    """The captured sid goes into the send and the next regex; every step is measured."""
    ex = exchange(SESSION)
    assert (ex.step, ex.deadline) == (Step.CONVERSATION, 12.5)
    ex.message('{"type":"hello","sid":"s.1"}', 10.75)
    assert ex.captures == {"sid": "s.1"}
    assert sent(ex) == [(Opcode.TEXT, b'{"op":"auth","sid":"s.1","conn":3,"seq":1}')]
    assert ex.deadline == 12.75
    ex.message("ok sX1 1", 10.8)  # the sid escaped: '.' is not any character
    assert ex.attempt.outcome is None
    ex.message("ok s.1 1", 11.0)
    a = ex.attempt
    assert (a.outcome, a.first_message, a.rtt, a.latency) == (Outcome.OK, 0.25, 0.25, 1.0)
    assert ex.step is Step.CLOSING


def test_a_binary_send_goes_out_as_a_binary_frame() -> None:
    """hex sends are binary frames; hex expects match a binary answer."""
    ex = exchange(
        conversation(
            ConversationStep("connect", send=BinarySend(b"\x10\x00")),
            expect("connack", HexMatch(b"\x20")),
        )
    )
    assert sent(ex) == [(Opcode.BINARY, b"\x10\x00")]
    ex.message(b"\x20\x02", 11.0)
    assert (ex.attempt.outcome, ex.attempt.rtt) == (Outcome.OK, 0.5)


def test_a_hex_send_whose_capture_is_not_hex_fails_at_its_step() -> None:
    """The send step is named, as unexpected_message (the target's value does not fit)."""
    c = conversation(
        expect("hello", TextMatch("^hello (?P<sid>.+)$")),
        ConversationStep("sub", send=HexSend("c0 {sid}", SID)),
        expect("ack", HexMatch(b"\xd0")),
    )
    ex = exchange(c)
    ex.message("hello 0a", 10.6)
    assert sent(ex) == [(Opcode.BINARY, b"\xc0\x0a")]
    ex = exchange(c)
    ex.message("hello s.1", 10.6)
    a = ex.attempt
    assert (a.outcome, a.step) == (Outcome.UNEXPECTED_MESSAGE, "sub")
    assert a.detail == "step 'sub' cannot be sent: {sid} is 's.1', not hex bytes"
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_others_fail_fails_at_once_naming_the_step() -> None:
    """With others: fail a message that does not match is unexpected_message, closed 1008."""
    ex = exchange(conversation(expect("ack", HexMatch(b"\x20"), others_fail=True)))
    ex.message(b"\x30\x00", 11.0)
    a = ex.attempt
    assert (a.outcome, a.step) == (Outcome.UNEXPECTED_MESSAGE, "ack")
    assert a.detail == "ack did not match hex '20': binary '30 00'"
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_others_skip_keeps_the_last_as_the_timeouts_example() -> None:
    """Skipped messages do not fail; at the timeout the last one is quoted."""
    ex = exchange(conversation(expect("ack", TextMatch("ack"))))
    ex.message("first", 11.0)
    ex.message(b"\x01", 11.1)
    ex.expired(12.5)
    a = ex.attempt
    assert (a.outcome, a.step) == (Outcome.UNEXPECTED_MESSAGE, "ack")
    assert a.detail == "no message matched step 'ack' within 2s; last one: binary '01'"
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_a_timeout_without_messages_names_the_step() -> None:
    """No message at all is a timeout of that step."""
    ex = exchange(conversation(send("s", "x"), expect("ack", TextMatch("ack"), timeout=0.5)))
    ex.expired(11.0)
    assert (ex.attempt.outcome, ex.attempt.step) == (Outcome.TIMEOUT, "ack")
    assert ex.attempt.detail == "no message for step 'ack' within 0.5s"


def test_an_optional_step_that_times_out_is_passed() -> None:
    """An optional step's timeout moves on to the next step: not a failure."""
    ex = exchange(
        conversation(
            expect("maybe", TextMatch("banner"), optional=True, timeout=0.5),
            expect("ready", TextMatch("ready")),
        )
    )
    ex.expired(11.0)
    assert ex.attempt.outcome is None
    assert ex.deadline == 13.0
    ex.message("ready", 11.5)
    assert ex.attempt.outcome is Outcome.OK
    assert ex.attempt.first_message is None, "the measured step was passed over"


def test_an_optional_step_hands_a_non_matching_message_on() -> None:
    """With others: fail, an optional step gives the message that is not its to the next."""
    ex = exchange(
        conversation(
            expect("maybe", TextMatch("banner"), optional=True, others_fail=True),
            send("hi", "hi"),
            expect("ready", TextMatch("ready")),
        )
    )
    ex.message("ready", 11.0)
    assert sent(ex) == [(Opcode.TEXT, b"hi"), (Opcode.CLOSE, (1000).to_bytes(2, "big"))]
    assert ex.attempt.outcome is Outcome.OK


def test_repeat_sends_n_times_with_seq_and_expects_n_matches() -> None:
    """repeat: N sends N messages ({seq} counting up) and awaits N matches, each timed."""
    ex = exchange(
        conversation(
            send("sub", "sub {seq}", repeat=3),
            expect("ack", TextMatch("^ack$"), repeat=2, timeout=1.0),
        )
    )
    assert sent(ex) == [(Opcode.TEXT, b"sub 1"), (Opcode.TEXT, b"sub 2"), (Opcode.TEXT, b"sub 3")]
    assert ex.seq == 3
    ex.message("ack", 10.75)
    assert (ex.attempt.outcome, ex.deadline) == (None, 11.75)
    ex.message("ack", 11.0)
    assert ex.attempt.outcome is Outcome.OK
    assert ex.attempt.rtt == 0.25, "the round trip is the first match"


def test_measure_declared_on_other_steps() -> None:
    """A declared measure times that step: first message from the upgrade, rtt from the send."""
    ex = exchange(
        conversation(
            expect("a", TextMatch("a")),
            expect("b", TextMatch("b")),
            send("s", "s"),
            expect("c", TextMatch("c")),
            first_message=1,
            round_trip=3,
        )
    )
    ex.message("a", 11.0)
    ex.message("b", 11.5)
    ex.message("c", 12.0)
    assert (ex.attempt.first_message, ex.attempt.rtt) == (1.0, 0.5)


def test_the_peer_closing_during_a_step_names_it() -> None:
    """A close frame or a lost connection during a step is 'closed' with the step's name."""
    ex = exchange(SESSION)
    ex.peer_closed(Close(4401, "Unauthorized"), 11.0)
    a = ex.attempt
    assert (a.outcome, a.step) == (Outcome.CLOSED, "hello")
    assert a.detail == "the peer closed with code 4401 (Unauthorized) during step 'hello'"
    ex = exchange(SESSION)
    ex.connection_lost("", 11.0)
    assert ex.attempt.detail == "the peer closed the connection during step 'hello'"


def test_an_empty_conversation_succeeds_at_the_upgrade() -> None:
    """No steps: the upgrade is the whole probe (as without welcome and echo)."""
    ex = exchange(conversation())
    assert ex.attempt.outcome is Outcome.OK
    assert ex.captures == {}


# -- held connections: heartbeats and the keepalive ------------------------------------------

HEARTBEATS = (
    Heartbeat(TextMatch("^2$"), TextSend("3")),
    Heartbeat(JsonMatch({"type": "ping"}), TextSend('{"type":"pong","sid":"{sid}"}', SID)),
)


def test_heartbeats_are_answered_during_and_after_the_conversation() -> None:
    """A heartbeat while a step waits is answered (others: fail does not fail); once held too."""
    ex = exchange(
        conversation(
            expect("hello", TextMatch("^hello (?P<sid>.+)$"), others_fail=True),
            heartbeats=HEARTBEATS,
        ),
        keep_open=True,
    )
    ex.message("2", 10.6)
    assert sent(ex) == [(Opcode.TEXT, b"3")]
    assert (ex.attempt.outcome, ex.step) == (None, Step.CONVERSATION)
    ex.message("hello s1", 10.7)
    assert ex.step is Step.HELD
    ex.message("2", 11.0)
    ex.message('{"type":"ping"}', 11.1)
    ex.message("other", 11.2)
    assert sent(ex) == [(Opcode.TEXT, b"3"), (Opcode.TEXT, b'{"type":"pong","sid":"s1"}')]
    assert ex.seq == 3


def test_a_heartbeat_during_a_step_is_not_the_timeouts_last_message() -> None:
    """With others: skip a heartbeat is answered, not kept as the timeout's example."""
    ex = exchange(conversation(expect("ack", TextMatch("ack")), heartbeats=HEARTBEATS))
    ex.message("2", 11.0)
    ex.expired(12.5)
    assert (ex.attempt.outcome, ex.attempt.detail) == (
        Outcome.TIMEOUT,
        "no message for step 'ack' within 2s",
    )
    ex = exchange(conversation(expect("ack", TextMatch("ack")), heartbeats=HEARTBEATS))
    ex.message("news", 11.0)
    ex.message("2", 11.1)
    ex.expired(12.5)
    assert ex.attempt.detail == "no message matched step 'ack' within 2s; last one: 'news'"
    assert sent(ex)[0] == (Opcode.TEXT, b"3")


def test_a_heartbeat_answer_does_not_move_the_steps_seq() -> None:
    """An expect step matches {seq} of the last conversation send, not of a heartbeat answer."""
    ex = exchange(
        conversation(
            send("sub", "sub {seq}"),
            expect("echo", TextMatch("^echo {seq}$")),
            heartbeats=HEARTBEATS,
        )
    )
    ex.message("2", 10.6)
    assert (ex.seq, sent(ex)) == (2, [(Opcode.TEXT, b"sub 1"), (Opcode.TEXT, b"3")])
    ex.message("echo 1", 10.7)
    assert ex.attempt.outcome is Outcome.OK
    assert ex.attempt.rtt == pytest.approx(0.2), "the rtt runs from the send, not the answer"


def test_a_heartbeat_is_not_handed_on_by_an_optional_step() -> None:
    """An optional step with others: fail answers a heartbeat and keeps waiting."""
    ex = exchange(
        conversation(
            expect("maybe", TextMatch("banner"), optional=True, others_fail=True),
            expect("ready", TextMatch("ready")),
            heartbeats=HEARTBEATS,
        )
    )
    ex.message("2", 10.6)
    assert ex.deadline == 12.5, "still the optional step, with its own deadline"
    ex.message("banner", 10.7)
    ex.message("ready", 10.8)
    assert ex.attempt.outcome is Outcome.OK
    assert ex.attempt.first_message == pytest.approx(0.2), "the banner was matched"


def test_the_step_gets_a_message_that_a_heartbeat_rule_also_matches() -> None:
    """The awaited step comes first: a message matching both is the step's, not answered."""
    ex = exchange(conversation(expect("two", TextMatch("^2")), heartbeats=HEARTBEATS))
    ex.message("2", 10.6)
    assert ex.attempt.outcome is Outcome.OK
    assert sent(ex) == [(Opcode.CLOSE, (1000).to_bytes(2, "big"))]


def test_heartbeats_stop_while_the_peer_reads_nothing() -> None:
    """Past the write buffer's mark (answer_pings off) heartbeats go unanswered, as pings do."""
    ex = exchange(conversation(heartbeats=HEARTBEATS), keep_open=True)
    ex.session.answer_pings = False
    ex.message("2", 11.0)
    ex.session.answer_pings = True
    ex.message("2", 11.1)
    assert sent(ex) == [(Opcode.TEXT, b"3")]


HEX_ANSWER = (Heartbeat(TextMatch("^2$"), HexSend("03 {sid}", SID)),)


def test_a_hex_heartbeat_answer_that_cannot_be_filled_ends_the_connection() -> None:
    """During a step the attempt fails; held, the connection is lost; both closed 1008."""
    ex = exchange(
        conversation(
            expect("hello", TextMatch("^hello (?P<sid>.+)$")),
            expect("ready", TextMatch("^ready")),
            heartbeats=HEX_ANSWER,
        )
    )
    ex.message("hello nothex", 10.6)
    ex.message("2", 10.7)
    assert (ex.attempt.outcome, ex.attempt.step) == (Outcome.UNEXPECTED_MESSAGE, "ready")
    assert ex.attempt.detail == (
        "a heartbeat answer cannot be sent: {sid} is 'nothex', not hex bytes"
    )
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]
    ex = exchange(
        conversation(expect("hello", TextMatch("^hello (?P<sid>.+)$")), heartbeats=HEX_ANSWER),
        keep_open=True,
    )
    ex.message("hello ab", 10.6)
    ex.message("2", 10.7)
    assert sent(ex) == [(Opcode.BINARY, b"\x03\xab")]
    ex.captures["sid"] = "nothex"
    ex.message("2", 10.8)
    assert (ex.lost_at, ex.step) == (10.8, Step.CLOSING)
    assert ex.lost_reason == "a heartbeat answer cannot be sent: {sid} is 'nothex', not hex bytes"
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]


def test_a_hex_keepalive_that_cannot_be_filled_loses_the_connection() -> None:
    """A keepalive whose capture is not hex bytes: the stable connection is lost, 1008."""
    message = KeepaliveMessage(HexSend("c0 {sid}", SID), HexMatch(b"\xd0"))
    c = conversation(expect("hello", TextMatch("^hello (?P<sid>.+)$")), keepalive=message)
    ex = exchange(c, keepalive=Keepalive(1.0, 0.5, "echo", lambda _: None))
    ex.message("hello s.1", 10.6)
    ex.expired(11.6)
    assert ex.lost_reason == "the keepalive cannot be sent: {sid} is 's.1', not hex bytes"
    assert sent(ex) == [(Opcode.CLOSE, (1008).to_bytes(2, "big"))]
    assert not ex.awaiting_answer


def test_an_unanswered_heartbeat_during_a_step_is_still_not_another_message() -> None:
    """Past the mark during a step, a heartbeat goes unanswered and does not fail the step."""
    ex = exchange(
        conversation(expect("ack", TextMatch("ack"), others_fail=True), heartbeats=HEARTBEATS)
    )
    ex.session.answer_pings = False
    ex.message("2", 11.0)
    assert (ex.attempt.outcome, sent(ex)) == (None, [])
    ex.message("ack", 11.1)
    assert ex.attempt.outcome is Outcome.OK


def keepalive_exchange(mode: Literal["ping", "echo"] = "echo") -> tuple[ProbeExchange, list[float]]:
    rtts: list[float] = []
    message = KeepaliveMessage(TextSend("ka {seq}"), TextMatch("^ka {seq}$"))
    c = conversation(
        send("init", "init"),
        expect("ack", TextMatch("ack")),
        heartbeats=HEARTBEATS[:1],
        keepalive=message,
    )
    ex = exchange(c, keepalive=Keepalive(1.0, 0.5, mode, rtts.append))
    assert sent(ex) == [(Opcode.TEXT, b"init")]
    ex.message("ack", 10.6)
    assert (ex.step, ex.deadline) == (Step.HELD, 11.6)
    return ex, rtts


def test_the_keepalive_sends_its_message_never_the_conversation() -> None:
    """Each interval the keepalive goes out (not the init); its answer is the rtt."""
    ex, rtts = keepalive_exchange()
    ex.expired(11.6)
    assert sent(ex) == [(Opcode.TEXT, b"ka 2")]
    assert ex.awaiting_answer
    ex.message("2", 11.65)  # a heartbeat meanwhile is answered, not taken for the answer
    assert sent(ex) == [(Opcode.TEXT, b"3")]
    ex.message("ka 3", 11.68)  # {seq} is the keepalive's own, not the heartbeat answer's
    assert rtts == []
    ex.message("ka 2", 11.7)
    assert rtts == [pytest.approx(0.1)]
    assert ex.deadline == 12.6
    ex.expired(12.6)
    assert sent(ex) == [(Opcode.TEXT, b"ka 4")]
    ex.message("ka 3", 12.7)
    assert len(rtts) == 1
    ex.expired(13.1)
    assert (ex.lost_at, ex.lost_reason) == (13.1, "no echo within 0.5s")
    assert ex.step is Step.CLOSING


def test_a_ping_keepalive_is_not_answered_by_a_message() -> None:
    """In ping mode a message matching the keepalive's answer does not stand for the pong."""
    ex, rtts = keepalive_exchange("ping")
    ex.expired(11.6)
    assert sent(ex) == [(Opcode.PING, (2).to_bytes(8, "big"))]
    ex.message("ka 2", 11.7)
    assert rtts == []
    ex.pong((2).to_bytes(8, "big"), 11.8)
    assert rtts == [pytest.approx(0.2)]


def test_the_short_forms_expectations_become_a_conversation() -> None:
    """A spec-like object without a conversation gets one from its welcome and echo."""

    @dataclass(frozen=True)
    class Short:
        handshake_timeout: float = 5.0
        welcome: re.Pattern[str] | None = None
        welcome_timeout: float = 1.0
        echo_payload: str | None = "p{seq}"
        echo_timeout: float = 1.0
        calls: list[int] = field(default_factory=list)

        def echo_for(self, conn: int, seq: int) -> tuple[str, re.Pattern[str]]:
            self.calls.append(seq)
            return f"p{seq}", re.compile(f"^p{seq}$")

    c = conversation_of(Short())
    assert [s.name for s in c.steps] == ["echo", "echo"]
    matcher = c.steps[1].expect
    assert isinstance(matcher, EchoForMatch)
    assert matcher.describe() == "the echo pattern"
    assert matcher.match(b"p2", 1, 2, {})
    assert c.keepalive is not None


def test_the_short_forms_welcome_quotes_a_binary_message_as_text() -> None:
    """A binary welcome that does not match is quoted as its text, as before conversations."""
    short = conversation_of(
        Expect(
            Conversation(
                (
                    ConversationStep(
                        "welcome",
                        expect=TextMatch(re.compile("^hi"), decode_binary=True),
                        others_fail=True,
                        stage=Step.WELCOME,
                    ),
                )
            )
        )
    )
    ex = exchange(short)
    ex.message(b"bye", 11.0)
    assert ex.attempt.detail == "welcome did not match '^hi': 'bye'"


def test_the_connection_lost_before_the_upgrade_names_the_upgrade() -> None:
    """TCP gone while the upgrade answer is awaited is 'closed' during the upgrade."""
    session = ClientSession(b"GET / HTTP/1.1\r\n\r\n", KEY, (), 1000)
    ex = ProbeExchange(Attempt(Phase.SPIKE, 1), session, Expect(SESSION))
    ex.started(0.0)
    ex.connection_lost("", 1.0)
    assert (ex.attempt.step, ex.attempt.detail) == (
        "upgrade",
        "the peer closed the connection during the upgrade",
    )


def test_a_held_connection_lost_to_the_receive_budget_keeps_the_budgets_detail() -> None:
    """Held, the prober's budget is the loss's reason as it is (no 'protocol error'); the
    target's violation stays a protocol error."""
    ex = exchange(conversation(), keep_open=True)
    ex.failed("the prober's receive buffers are full (...)", 11.0, by_prober=True)
    assert (ex.lost_reason, ex.step) == ("the prober's receive buffers are full (...)", Step.OVER)
    ex = exchange(conversation(), keep_open=True)
    ex.failed("bad frame", 11.0)
    assert ex.lost_reason == "protocol error: bad frame"
