"""Merging what workers report is exact, and the wire between them is checked: no I/O."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.config import load_config
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.result import (
    SpikeSummary,
    count_outcomes,
    count_upgrade_statuses,
    group_errors,
)
from spikewatch.engine.prober_monitor import WindowReport
from spikewatch.engine.spec import build_connection_spec
from spikewatch.engine.worker_messages import (
    ATTEMPT_FIELDS,
    DAEMON_MESSAGES,
    MAX_MESSAGE_BYTES,
    WORKER_MESSAGES,
    Abort,
    Attempts,
    Close,
    Closed,
    Failed,
    Finish,
    Health,
    Prepare,
    Prepared,
    Progress,
    Spike,
    WireError,
    WireMessage,
    WorkerHealth,
    apply_share,
    attempt_to_wire,
    decode_message,
    encode_message,
    group_by_instant,
    read_message,
    split_round_robin,
    target_from_wire,
    target_to_wire,
)
from spikewatch.errors import ConfigError

times = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
maybe_time = st.none() | times


@st.composite
def spikes(draw: st.DrawFn) -> list[Attempt]:
    """A measured spike: conns in plan order, batches at shared instants, any outcomes."""
    count = draw(st.integers(min_value=0, max_value=60))
    instants = sorted(draw(st.lists(times, min_size=1, max_size=4)))
    attempts = []
    for conn in range(10, 10 + count):
        outcome = draw(st.sampled_from(list(Outcome)))
        attempts.append(
            Attempt(
                Phase.SPIKE,
                conn,
                planned=instants[min(conn * len(instants) // (count + 10), len(instants) - 1)],
                started=draw(maybe_time),
                ended=draw(times),
                outcome=outcome,
                detail=draw(st.text(max_size=20)),
                status=draw(st.none() | st.integers(min_value=100, max_value=599)),
                handshake=draw(maybe_time),
                first_message=draw(maybe_time),
                rtt=draw(maybe_time),
                latency=draw(maybe_time),
            )
        )
    return attempts


def through_the_pipe(message: WireMessage) -> object:
    """Send a message as its sender does and read it back as its reader does."""
    frame = encode_message(message)
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    if isinstance(message, Prepare | Spike | Abort | Close | Finish):
        return decode_message(frame[4:], DAEMON_MESSAGES)
    return decode_message(frame[4:], WORKER_MESSAGES)


def as_a_rogue_sends(message: dict[str, Any], messages: Any = WORKER_MESSAGES) -> object:
    """Read a message written by hand (not through the models) as its reader does."""
    return decode_message(json.dumps(message).encode(), messages)


@given(spikes(), st.integers(min_value=1, max_value=5))
def test_merged_shares_summarize_as_the_union(measured: list[Attempt], workers: int) -> None:
    """Shares dealt to N workers and merged back give the union's summary, T0 and errors."""
    planned = [Attempt(a.phase, a.conn, planned=a.planned) for a in measured]
    for share in split_round_robin(planned, workers):
        conns = {a.conn for a in share}
        rows = [attempt_to_wire(a) for a in measured if a.conn in conns]
        message = through_the_pipe(Attempts(run="r", attempts=rows))
        assert isinstance(message, Attempts)
        apply_share({a.conn: a for a in share}, message.attempts)
    assert planned == measured
    assert SpikeSummary.from_attempts(planned, aborted=False) == SpikeSummary.from_attempts(
        measured, aborted=False
    )
    assert count_outcomes(planned) == count_outcomes(measured)
    assert group_errors(planned) == group_errors(measured)
    assert count_upgrade_statuses(planned) == count_upgrade_statuses(measured)
    t0 = [a.ended for a in planned if a.outcome != Outcome.ABORTED]
    assert t0 == [a.ended for a in measured if a.outcome != Outcome.ABORTED]


def test_split_round_robin_deals_every_batch_evenly() -> None:
    """Item k goes to share k mod n: disjoint shares that together are the whole."""
    assert split_round_robin(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert split_round_robin([], 2) == [[], []]
    with pytest.raises(ValueError, match="shares must be >= 1"):
        split_round_robin([1], 0)


def test_groups_follow_the_planned_instants() -> None:
    """One spike message group per planned instant, in order, and it parses back."""
    attempts = [Attempt(Phase.SPIKE, c, planned=p) for c, p in [(1, 5.0), (3, 5.0), (5, 5.5)]]
    groups = group_by_instant(attempts)
    assert groups == [(5.0, [1, 3]), (5.5, [5])]
    spike = through_the_pipe(Spike(run="r", groups=groups, progress=False))
    assert isinstance(spike, Spike)
    assert spike.groups == [(5.0, [1, 3]), (5.5, [5])]


@pytest.mark.parametrize(
    ("groups", "problem"),
    [
        ("x", r"groups: Input should be a valid array, got 'x'"),
        ([[1.0]], r"groups\[0\]\[1\]: Field required"),
        ([[None, [1]]], r"groups\[0\]\[0\]: Input should be a valid number, got None"),
        ([[1.0, ["a"]]], r"groups\[0\]\[1\]\[0\]: Input should be a valid integer, got 'a'"),
        ([[float("inf"), [1]]], r"groups\[0\]\[0\]: Input should be a finite number"),
        ([[1.0, [True]]], r"groups\[0\]\[1\]\[0\]: Input should be a valid integer, got True"),
    ],
)
def test_bad_groups_are_refused(groups: object, problem: str) -> None:
    """A spike message with malformed groups is refused, never half-fired."""
    message = {"type": "spike", "run": "r", "groups": groups, "progress": False}
    with pytest.raises(WireError, match=f"^spike message: {problem}") as refused:
        as_a_rogue_sends(message, DAEMON_MESSAGES)
    assert (refused.value.run, refused.value.kind) == ("r", "spike")


def spike_share() -> dict[int, Attempt]:
    return {c: Attempt(Phase.SPIKE, c, planned=1.0) for c in (1, 2)}


def row(number: int, **change: object) -> list[object]:
    attempt = Attempt(Phase.SPIKE, number, planned=1.0, started=1.1, ended=1.2, outcome=Outcome.OK)
    values: list[object] = list(attempt_to_wire(attempt))
    for name, value in change.items():
        values[ATTEMPT_FIELDS.index(name)] = value
    return values


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([row(1)], "1 attempt\\(s\\) missing"),
        ([row(1), row(1)], "not in the share or repeated"),
        ([row(1), row(3)], "not in the share or repeated"),
        ([row(1), row(2, outcome=None)], "no outcome"),
        ([row(1), row(2, planned=2.0)], "another phase or plan"),
        ([row(1), row(2, phase="recovery")], "another phase or plan"),
        ([row(1), row(2, phase="lunch")], r"attempts\[1\]\.phase: Input should be 'baseline'"),
        ([row(1), row(2, outcome="fine")], r"attempts\[1\]\.outcome: Input .* got 'fine'"),
        ([row(1), row(2, started=True)], r"attempts\[1\]\.started: .* valid number, got True"),
        ([row(1), row(2, ended=1e999)], r"attempts\[1\]\.ended: Input should be a finite number"),
        ([row(1), row(2, conn=2.0)], r"attempts\[1\]\.conn: .* valid integer, got 2\.0"),
        ([row(1), row(2, status="503")], r"attempts\[1\]\.status: .* valid integer, got '503'"),
        ([row(1), row(2, detail=None)], r"attempts\[1\]\.detail: Input should be a valid string"),
        ([row(1), [*row(2), None]], r"attempts\[1\]: Tuple should have at most 13 items"),
        ([row(1), [2]], r"attempts\[1\]\.conn: Field required"),
    ],
)
def test_a_bad_share_changes_nothing(rows: list[object], problem: str) -> None:
    """A report that is not exactly the share is refused as a whole."""
    share = spike_share()
    with pytest.raises(WireError, match=problem):
        merge(share, {"type": "attempts", "run": "r", "attempts": rows})
    assert all(a.outcome is None for a in share.values())


def merge(share: dict[int, Attempt], message: dict[str, Any]) -> None:
    """Read a share's report as the daemon does and merge it."""
    report = as_a_rogue_sends(message)
    assert isinstance(report, Attempts)
    apply_share(share, report.attempts)


def test_a_row_is_an_attempts_fields_in_order() -> None:
    """The row's order is Attempt's own, so a row builds the attempt it came from."""
    assert tuple(f.name for f in dataclasses.fields(Attempt)) == ATTEMPT_FIELDS


EVERY_MESSAGE: list[WireMessage] = [
    Prepare(run="r", target={"name": "t"}, address="::1", lag_interval=0.02),
    Spike(run="r", groups=[(1.5, [1, 2])], progress=True, slots=2, full="full"),
    Abort(run="r", reason="abort.error_ratio=0.5 reached"),
    Close(run="r"),
    Finish(run="r"),
    Prepared(run="r"),
    Failed(run="r", error="no"),
    Progress(run="r", finished=3, failed=1),
    Attempts(run="r", attempts=[attempt_to_wire(Attempt(Phase.SPIKE, 1, planned=0.1))]),
    Closed(run="r"),
    Health(
        run="r", loop_lag_p99=0.1, loop_lag_max=None, cpu_percent=3.0, cpu_window=1.0, rss_bytes=9
    ),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
def test_every_message_survives_the_pipe(message: WireMessage) -> None:
    """Each message of the conversation reads back equal to what was sent."""
    assert through_the_pipe(message) == message


async def test_read_message_frames_and_refusals() -> None:
    """Messages are length-prefixed JSON objects; a broken stream is an error, EOF is None."""

    async def read(data: bytes) -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_message(reader, WORKER_MESSAGES)

    one = encode_message(Closed(run="r"))
    assert await read(one) == Closed(run="r")
    assert await read(b"") is None
    with pytest.raises(WireError, match="inside a message header"):
        await read(one[:2])
    with pytest.raises(WireError, match="inside a message"):
        await read(one[:-1])
    with pytest.raises(WireError, match="exceeds"):
        await read(struct.pack(">I", MAX_MESSAGE_BYTES + 1))
    with pytest.raises(WireError, match="not JSON"):
        decode_message(b"{", WORKER_MESSAGES)
    with pytest.raises(WireError, match="not a message"):
        decode_message(b"[1]", WORKER_MESSAGES)
    with pytest.raises(WireError, match="not a message") as refused:
        decode_message(b'{"type": "closed", "run": 7}', WORKER_MESSAGES)
    assert refused.value.run is None, "no run to blame: the stream is garbled"
    with pytest.raises(WireError, match="exceeds"):
        encode_message(Failed(run="r", error="x" * MAX_MESSAGE_BYTES))


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({"type": "launch", "run": "r"}, "unknown message type 'launch'"),
        (
            {"type": "closed", "run": "r", "x": 1},
            "closed message: x: Extra inputs are not permitted",
        ),
        ({"type": "failed", "run": "r"}, "failed message: error: Field required"),
        ({"type": "prepared", "run": "r", "type2": 1}, "prepared message: type2"),
    ],
)
def test_a_message_outside_the_protocol_names_its_run(
    message: dict[str, Any], problem: str
) -> None:
    """A well-framed message that is not in the protocol is refused, naming run and type."""
    with pytest.raises(WireError, match=problem) as refused:
        as_a_rogue_sends(message)
    assert (refused.value.run, refused.value.kind) == ("r", message["type"])


def test_target_travels_with_its_jwt_key_inline(tmp_path: Path) -> None:
    """The worker rebuilds the same target (key inline, no file) and signs the same way."""
    (tmp_path / "secret").write_text("a-test-secret-that-is-32-bytes-long!\n")
    config = tmp_path / "c.yaml"
    document = {
        "targets": [
            {
                "name": "t",
                "url": "ws://127.0.0.1:9/ws?x=1",
                "headers": {"X-Client": "spikewatch"},
                "subprotocols": ["chat.v1"],
                "welcome": {"match": "hi", "timeout": "2s"},
                "echo": {"payload": "{seq}", "match": "{seq}"},
                "auth": {"jwt": {"secret_file": "secret", "claims": {"sub": "{conn}"}}},
            }
        ],
        "scenarios": [{"name": "s", "spike": {"connections": 1}}],
    }
    config.write_text(yaml.safe_dump(document))
    target = load_config(config).targets[0]
    wire = json.loads(json.dumps(target_to_wire(target)))
    assert wire["auth"]["jwt"]["secret_file"] is None
    back = target_from_wire(wire)
    assert back.auth is not None
    assert target.auth is not None
    assert back.auth.jwt.key_material() == target.auth.jwt.key_material()
    without_files = target.model_copy(
        update={"auth": back.auth}  # the only difference: no *_file
    )
    assert back == without_files
    spec = build_connection_spec(back, "127.0.0.1")
    assert spec.request.subprotocols == ("chat.v1",)


def test_health_round_trip_and_refusal() -> None:
    """A worker's health survives the wire; a report without its memory is refused."""
    window = WindowReport(0.01, 0.02, 55.0, 123, cpu_window=1.5)
    health = WorkerHealth.from_window(window)
    message = through_the_pipe(Health.of("r", health))
    assert isinstance(message, Health)
    assert message.worker_health() == health
    without_memory = {"type": "health", "run": "r", "cpu_window": 1.0, "loop_lag_p99": None}
    without_memory |= {"loop_lag_max": None, "cpu_percent": None}
    with pytest.raises(WireError, match=r"^health message: rss_bytes: Field required$"):
        as_a_rogue_sends(without_memory)


@pytest.mark.parametrize(
    ("workers", "problem"), [(0, "≥ 1"), (65, "≤ 64"), ("two", "whole number")]
)
def test_workers_must_be_a_small_positive_count(
    tmp_path: Path, workers: object, problem: str
) -> None:
    """prober.workers is 1..64; anything else is one clear problem naming the field."""
    config = tmp_path / "c.yaml"
    document = {
        "prober": {"workers": workers},
        "targets": [{"name": "t", "url": "ws://127.0.0.1:9/ws"}],
        "scenarios": [{"name": "s", "spike": {"connections": 1}}],
    }
    config.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert [p.path for p in caught.value.problems] == ["prober.workers"]
    assert problem in str(caught.value)
