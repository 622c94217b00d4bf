"""Tests for a churn's plan and its result (issue 13, item 6): pure, no I/O."""

from __future__ import annotations

import pytest

from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.core.phases import ChurnPlan, SpikePhase
from spikewatch.core.plan import churn_attempts, plan_churn, shard_plan
from spikewatch.core.result import achieved_start_rate
from spikewatch.summary import format_summary
from tests.core.test_run_result import build, record

START = 15.0


def started(conn: int, planned: float, late: float = 0.0) -> Attempt:
    """A successful churn attempt that started ``late`` after its planned instant."""
    return Attempt(
        Phase.SPIKE,
        conn,
        planned=planned,
        started=planned + late,
        ended=planned + late + 0.01,
        outcome=Outcome.OK,
        handshake=0.002,
        first_message=0.001,
        rtt=0.003,
        latency=0.01,
    )


@pytest.mark.parametrize(
    ("rate", "duration", "count"),
    [(50, 10, 500), (3, 1, 3), (0.5, 10, 5), (0.1, 30, 3), (7, 0.5, 4), (1e-6, 1e-4, 1)],
)
def test_churn_attempts_count_the_starts_before_the_duration_ends(
    rate: float, duration: float, count: int
) -> None:
    """One start at every i/rate before the duration ends; a whole product up to rounding
    (0.1/s for 30 s) does not gain a start on the duration's end."""
    assert churn_attempts(rate, duration) == count


@pytest.mark.parametrize(
    ("rate", "duration", "message"),
    [
        (0, 1, "rate must be a finite number > 0, got 0"),
        (float("inf"), 1, "rate must be a finite number > 0, got inf"),
        (1, 0, "duration must be a finite number > 0, got 0"),
        (1, float("nan"), "duration must be a finite number > 0, got nan"),
    ],
)
def test_churn_attempts_reject_bad_arguments(rate: float, duration: float, message: str) -> None:
    """A rate or duration that is not a finite positive number is refused."""
    with pytest.raises(ValueError, match=message):
        churn_attempts(rate, duration)


def test_plan_churn_starts_each_connection_at_its_own_instant() -> None:
    """Connection i is due at i / rate, in a group of its own, without drift."""
    plan = plan_churn(40, 100)
    assert len(plan) == 4000
    assert [(p.index, p.group) for p in plan[:3]] == [(0, 0), (1, 1), (2, 2)]
    assert plan[3999].offset == 3999 / 40


def test_a_sharded_churn_keeps_the_instants_and_splits_the_rate() -> None:
    """Each of 2 replicas takes every other start at its planned instant: half the rate."""
    share = shard_plan(plan_churn(10, 1), 1, 2)
    assert [p.offset for p in share] == [0.1, 0.3, 0.5, 0.7, 0.9]


def test_the_achieved_rate_is_the_offered_one_when_every_start_is_on_time() -> None:
    """N starts at i/rate from the start: N / (N / rate) = rate; late or missing starts lower it."""
    assert achieved_start_rate(START, [START + i / 20 for i in range(20)], 20) == pytest.approx(20)
    late = [START + i / 20 for i in range(19)] + [START + 1.95]
    assert achieved_start_rate(START, late, 20) == pytest.approx(20 / 2.0)
    assert achieved_start_rate(START, [START + i / 20 for i in range(10)], 20) == pytest.approx(20)
    assert achieved_start_rate(START, [], 20) == 0.0


def churn_phase(max_in_flight: int | None = None) -> SpikePhase:
    """A churn of 10 at 20/s, every start 1 ms late, one aborted by max_in_flight."""
    attempts = [started(100 + i, START + i / 20, late=0.001) for i in range(9)]
    aborted = Attempt(Phase.SPIKE, 109, planned=START + 9 / 20)
    aborted.abort(START + 9 / 20, "churn.max_in_flight=2 reached")
    plan = ChurnPlan(20, 0.5, START, max_in_flight=max_in_flight, peak_in_flight=2)
    return SpikePhase((*attempts, aborted), churn=plan)


def test_a_churns_json_says_its_shape_its_rates_and_its_concurrency() -> None:
    """The spike of a churn run says shape churn first, then the spike's figures, then
    its offered and achieved start rates; thresholds judge it as a spike."""
    result = build(record(spike=churn_phase(max_in_flight=2)))
    spike = result.as_dict()["spike"]
    assert next(iter(spike)) == "shape"
    assert spike["shape"] == "churn"
    assert spike["attempted"] == 10
    assert spike["outcomes"] == {"ok": 9, "aborted": 1}
    assert spike["start_lateness_seconds"] == {"p50": 0.001, "p99": 0.001, "max": 0.001}
    assert spike["churn"] == {
        "offered_rate_per_second": 20.0,
        "achieved_start_rate_per_second": round(9 / (8 / 20 + 0.001 + 1 / 20), 6),
        "duration_seconds": 0.5,
        "max_in_flight": 2,
        "peak_in_flight": 2,
    }
    assert result.result == RunResultKind.PASSED
    assert [c.name for c in result.thresholds] == ["success_ratio", "handshake_p95", "recovered"]


def test_a_spikes_json_says_no_shape() -> None:
    """Spike and ramp results stay as they were: no shape, no churn key."""
    spike = build(record()).as_dict()["spike"]
    assert "shape" not in spike
    assert "churn" not in spike


def test_the_summary_says_a_churns_pace() -> None:
    """The readable summary has a churn line: offered and achieved rates, peak in flight."""
    text = format_summary(build(record(spike=churn_phase())))
    assert "  churn       20/s offered, 20.0/s started, over 0.5s, at most 2 open at once" in text
