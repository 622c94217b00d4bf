"""Merging what workers report is exact, and the wire between them is checked: no I/O."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

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
from spikewatch.engine.selfcheck import WindowReport
from spikewatch.engine.spec import build_connection_spec
from spikewatch.engine.worker_protocol import (
    ATTEMPT_FIELDS,
    MAX_MESSAGE_BYTES,
    WireError,
    WorkerHealth,
    apply_share,
    attempt_to_wire,
    decode_body,
    encode_message,
    group_by_instant,
    parse_groups,
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


def through_the_pipe(rows: list[list[object]]) -> list[object]:
    """Send a share as a worker does and read it back as the daemon does."""
    frame = encode_message({"type": "attempts", "run": "r", "attempts": rows})
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    attempts: list[object] = decode_body(frame[4:])["attempts"]
    return attempts


@given(spikes(), st.integers(min_value=1, max_value=5))
def test_merged_shares_summarize_as_the_union(measured: list[Attempt], workers: int) -> None:
    """Shares dealt to N workers and merged back give the union's summary, T0 and errors."""
    planned = [Attempt(a.phase, a.conn, planned=a.planned) for a in measured]
    for share in split_round_robin(planned, workers):
        conns = {a.conn for a in share}
        rows = [attempt_to_wire(a) for a in measured if a.conn in conns]
        apply_share({a.conn: a for a in share}, through_the_pipe(rows))
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
    assert groups == [[5.0, [1, 3]], [5.5, [5]]]
    assert parse_groups(json.loads(json.dumps(groups))) == [(5.0, [1, 3]), (5.5, [5])]


@pytest.mark.parametrize(
    ("groups", "problem"),
    [
        ("x", "groups must be a list"),
        ([[1.0]], "a group is"),
        ([[None, [1]]], "needs its instant"),
        ([[1.0, ["a"]]], "conn must be an integer"),
        ([[float("inf"), [1]]], "finite number"),
    ],
)
def test_bad_groups_are_refused(groups: object, problem: str) -> None:
    """A spike message with malformed groups is refused, never half-fired."""
    with pytest.raises(WireError, match=problem):
        parse_groups(groups)


def spike_share() -> dict[int, Attempt]:
    return {c: Attempt(Phase.SPIKE, c, planned=1.0) for c in (1, 2)}


def row(number: int, **change: object) -> list[object]:
    attempt = Attempt(Phase.SPIKE, number, planned=1.0, started=1.1, ended=1.2, outcome=Outcome.OK)
    values = attempt_to_wire(attempt)
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
        ([row(1), row(2, phase="lunch")], "'lunch' is not a valid Phase"),
        ([row(1), row(2, outcome="fine")], "'fine' is not a valid Outcome"),
        ([row(1), row(2, started=True)], "started must be a finite number"),
        ([row(1), row(2, conn=2.0)], "conn must be an integer"),
        ([row(1), row(2, status="503")], "status must be an integer"),
        ([row(1), row(2, detail=None)], "detail must be a string"),
        ([row(1), [2]], "a list of 12 fields"),
    ],
)
def test_a_bad_share_changes_nothing(rows: list[object], problem: str) -> None:
    """A report that is not exactly the share is refused as a whole."""
    share = spike_share()
    with pytest.raises(WireError, match=problem):
        apply_share(share, rows)
    assert all(a.outcome is None for a in share.values())


async def test_read_message_frames_and_refusals() -> None:
    """Messages are length-prefixed JSON objects; a broken stream is an error, EOF is None."""

    async def read(data: bytes) -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_message(reader)

    one = encode_message({"type": "closed", "run": "r"})
    assert await read(one) == {"type": "closed", "run": "r"}
    assert await read(b"") is None
    with pytest.raises(WireError, match="inside a message header"):
        await read(one[:2])
    with pytest.raises(WireError, match="inside a message"):
        await read(one[:-1])
    with pytest.raises(WireError, match="exceeds"):
        await read(struct.pack(">I", MAX_MESSAGE_BYTES + 1))
    with pytest.raises(WireError, match="not JSON"):
        decode_body(b"{")
    with pytest.raises(WireError, match="not a message"):
        decode_body(b"[1]")


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
    assert WorkerHealth.from_wire(json.loads(json.dumps(health.to_wire()))) == health
    with pytest.raises(WireError, match="rss_bytes"):
        WorkerHealth.from_wire({"cpu_window": 1.0})


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
