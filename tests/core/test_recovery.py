"""Tests for spikewatch.core.recovery, on hand-made timelines."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.recovery import (
    Baseline,
    RecoveryDecision,
    RecoveryTracker,
    decide_baseline,
    good_probe_limit,
    is_good_probe,
)

T0 = 1000.0


def run_in_order(tracker: RecoveryTracker, results: Sequence[bool], interval: float = 0.5) -> None:
    """Start probe i at T0 + i * interval and finish it before the next one starts."""
    for i, good in enumerate(results):
        tracker.probe_started(i, T0 + i * interval)
        tracker.probe_finished(i, good)


# Baseline


def test_baseline_is_median_of_successful_probes() -> None:
    """B is the median latency of the successful probes only."""
    assert decide_baseline(5, [0.004, 0.002, 0.009, 0.003]) == Baseline(
        probes=5, ok=4, latency=0.0035, target_down=False
    )


def test_baseline_with_exactly_half_ok_is_not_down() -> None:
    """Half of the probes succeeding is enough: the target is not down."""
    baseline = decide_baseline(4, [0.01, 0.03])
    assert not baseline.target_down
    assert baseline.latency == pytest.approx(0.02)


def test_baseline_with_fewer_than_half_ok_is_down() -> None:
    """Fewer than half succeeding means target_down and no B."""
    assert decide_baseline(5, [0.01, 0.02]) == Baseline(
        probes=5, ok=2, latency=None, target_down=True
    )


def test_baseline_with_no_success_is_down() -> None:
    """No successful probe at all means target_down."""
    assert decide_baseline(1, []).target_down


@pytest.mark.parametrize(("probes", "latencies"), [(0, []), (1, [0.1, 0.2])])
def test_baseline_rejects_impossible_counts(probes: int, latencies: list[float]) -> None:
    """No probes, or more successes than probes, is a caller bug."""
    with pytest.raises(ValueError, match="probes"):
        decide_baseline(probes, latencies)


def test_good_probe_limit_adds_tolerance_and_slack() -> None:
    """The limit is B * (1 + tolerance) + slack."""
    assert good_probe_limit(0.010, 0.2, 0.005) == pytest.approx(0.017)


@pytest.mark.parametrize(
    ("baseline", "tolerance", "slack", "name"),
    [(-1.0, 0.2, 0.0, "baseline"), (0.01, -0.1, 0.0, "tolerance"), (0.01, 0.2, math.nan, "slack")],
)
def test_good_probe_limit_rejects_negative_inputs(
    baseline: float, tolerance: float, slack: float, name: str
) -> None:
    """Negative or NaN inputs are rejected rather than making every probe bad."""
    with pytest.raises(ValueError, match=name):
        good_probe_limit(baseline, tolerance, slack)


@pytest.mark.parametrize(
    ("ok", "latency", "good"),
    [(True, 0.017, True), (True, 0.01, True), (True, 0.0171, False), (False, 0.001, False)],
)
def test_is_good_probe(ok: bool, latency: float, good: bool) -> None:
    """A probe is good when it succeeded with latency at or below the limit."""
    assert is_good_probe(ok, latency, 0.017) is good


def test_failed_probe_without_latency_is_not_good() -> None:
    """A probe that never measured a latency is not good."""
    assert not is_good_probe(True, None, 1.0)


# Tracker on in-order timelines


def test_immediate_recovery_is_zero_seconds() -> None:
    """When the first probe (at T0) begins a good run, recovery took 0 s."""
    tracker = RecoveryTracker(T0, consecutive=3, timeout=120.0)
    run_in_order(tracker, [True, True, True])
    assert tracker.decision() == RecoveryDecision(
        state="recovered",
        recovered_at=T0,
        seconds=0.0,
        probes_started=3,
        probes_finished=3,
        good=3,
    )


def test_late_recovery_counts_from_t0() -> None:
    """Recovery time is the start of the run's first probe minus T0."""
    tracker = RecoveryTracker(T0, consecutive=2, timeout=120.0)
    run_in_order(tracker, [False, False, False, True, True])
    decision = tracker.decision()
    assert decision.state == "recovered"
    assert decision.recovered_at == T0 + 1.5
    assert decision.seconds == pytest.approx(1.5)


def test_flapping_probes_recover_at_start_of_full_run() -> None:
    """good good bad good good good recovers at the 4th probe, not the 1st."""
    tracker = RecoveryTracker(T0, consecutive=3, timeout=120.0)
    run_in_order(tracker, [True, True, False, True, True])
    assert tracker.decision().state == "pending"
    tracker.probe_started(5, T0 + 2.5)
    tracker.probe_finished(5, True)
    decision = tracker.decision()
    assert decision.state == "recovered"
    assert decision.seconds == pytest.approx(1.5)
    assert decision.good == 5


def test_consecutive_one_recovers_at_first_good_probe() -> None:
    """With consecutive=1 the first good probe is the recovery."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    run_in_order(tracker, [False, True, False])
    assert tracker.decision().recovered_at == T0 + 0.5


def test_results_after_recovery_do_not_change_it() -> None:
    """Once recovered, later probes (good or bad) leave the decision as it was."""
    tracker = RecoveryTracker(T0, consecutive=2, timeout=10.0)
    run_in_order(tracker, [True, True, False, False])
    decision = tracker.decision()
    assert decision.state == "recovered"
    assert decision.recovered_at == T0
    assert decision.probes_started == 4
    assert decision.good == 2


def test_pending_until_closed_then_not_recovered() -> None:
    """Without a qualifying run the decision stays pending until close says not_recovered."""
    tracker = RecoveryTracker(T0, consecutive=3, timeout=2.0)
    run_in_order(tracker, [True, True, False, True])
    assert tracker.decision().state == "pending"
    assert tracker.close() == RecoveryDecision(
        state="not_recovered",
        recovered_at=None,
        seconds=None,
        probes_started=4,
        probes_finished=4,
        good=3,
    )
    assert tracker.decision().state == "not_recovered"


def test_close_without_any_probe_is_not_recovered() -> None:
    """A tracker that never saw a probe did not see a recovery."""
    assert RecoveryTracker(T0, consecutive=1, timeout=1.0).close().state == "not_recovered"


def test_close_after_recovery_keeps_recovery() -> None:
    """Closing a recovered tracker returns the recovery, even with later probes pending."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    tracker.probe_started(0, T0)
    tracker.probe_started(1, T0 + 0.5)
    tracker.probe_finished(0, True)
    decision = tracker.close()
    assert decision.state == "recovered"
    assert decision.seconds == 0.0
    assert decision.probes_finished == 1


# Overlapping probes finishing out of order


def overlapping(consecutive: int = 2) -> RecoveryTracker:
    """Start a slow probe 0 at T0, then probes 1 and 2; finish 1 and 2 good, 0 still pending."""
    tracker = RecoveryTracker(T0, consecutive=consecutive, timeout=60.0)
    for i in range(3):
        tracker.probe_started(i, T0 + i)
    tracker.probe_finished(2, True)
    tracker.probe_finished(1, True)
    return tracker


def test_pending_early_probe_blocks_decision() -> None:
    """A later good run cannot decide while an earlier-started probe is pending."""
    tracker = overlapping()
    assert tracker.decision().state == "pending"
    assert tracker.decision().probes_finished == 2


def test_pending_early_probe_finishing_bad_lets_later_run_decide() -> None:
    """When the slow early probe ends bad, the later run is the recovery."""
    tracker = overlapping()
    tracker.probe_finished(0, False)
    assert tracker.decision().recovered_at == T0 + 1


def test_pending_early_probe_finishing_good_begins_the_run() -> None:
    """When the slow early probe ends good, the run begins with it."""
    tracker = overlapping()
    tracker.probe_finished(0, True)
    decision = tracker.decision()
    assert decision.recovered_at == T0
    assert decision.seconds == 0.0


def test_close_with_pending_probe_that_could_decide_is_refused() -> None:
    """close() refuses while a pending probe could still change the answer."""
    tracker = overlapping()
    with pytest.raises(ValueError, match="1 probe"):
        tracker.close()


def test_wants_no_more_probes_once_recovery_is_sure() -> None:
    """A finished good run behind a pending probe already makes recovery sure."""
    tracker = overlapping(consecutive=2)
    assert tracker.decision().state == "pending"
    assert not tracker.wants_more_probes(T0 + 3)


def test_wants_more_probes_while_run_is_incomplete() -> None:
    """Good probes split by a pending one are not yet a run."""
    tracker = RecoveryTracker(T0, consecutive=2, timeout=60.0)
    for i in range(3):
        tracker.probe_started(i, T0 + i)
    tracker.probe_finished(0, True)
    tracker.probe_finished(2, True)
    assert tracker.wants_more_probes(T0 + 3)
    tracker.probe_finished(1, False)
    assert tracker.wants_more_probes(T0 + 3)


# Edges of the window and misuse


def test_probe_may_start_exactly_at_t0() -> None:
    """A probe started exactly at T0 counts, and its recovery is 0 s."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=1.0)
    tracker.probe_started(0, T0)
    tracker.probe_finished(0, True)
    assert tracker.decision().seconds == 0.0


def test_probes_may_share_a_start_time() -> None:
    """Probes with the same start are ordered by when they were reported."""
    tracker = RecoveryTracker(T0, consecutive=2, timeout=1.0)
    tracker.probe_started(0, T0)
    tracker.probe_started(1, T0)
    tracker.probe_finished(1, True)
    tracker.probe_finished(0, True)
    assert tracker.decision().recovered_at == T0


def test_deadline_is_t0_plus_timeout() -> None:
    """The deadline is T0 + timeout and t0 is kept."""
    tracker = RecoveryTracker(T0, consecutive=3, timeout=120.0)
    assert tracker.deadline == T0 + 120.0
    assert tracker.t0 == T0


def test_probe_just_before_deadline_counts() -> None:
    """A probe starting just before the deadline may still complete the run."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=2.0)
    last = math.nextafter(tracker.deadline, 0.0)
    tracker.probe_started(0, last)
    tracker.probe_finished(0, True)
    assert tracker.close().recovered_at == last


@pytest.mark.parametrize("start", [T0 - 0.001, T0 + 2.0, T0 + 5.0, math.nan])
def test_probe_outside_window_is_rejected(start: float) -> None:
    """Starts before T0, at or after the deadline, or NaN are caller bugs."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=2.0)
    with pytest.raises(ValueError, match="outside"):
        tracker.probe_started(0, start)


def test_wants_more_probes_until_deadline() -> None:
    """Probing goes on until the deadline, and not at it."""
    tracker = RecoveryTracker(T0, consecutive=3, timeout=2.0)
    assert tracker.wants_more_probes(T0)
    assert tracker.wants_more_probes(math.nextafter(T0 + 2.0, 0.0))
    assert not tracker.wants_more_probes(T0 + 2.0)


def test_wants_no_more_probes_after_recovery_or_close() -> None:
    """Recovered or closed trackers want no more probes."""
    recovered = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    run_in_order(recovered, [True])
    assert not recovered.wants_more_probes(T0 + 1)
    closed = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    closed.close()
    assert not closed.wants_more_probes(T0 + 1)


def test_probe_starting_before_previous_is_rejected() -> None:
    """Probes must be reported in start order."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    tracker.probe_started(0, T0 + 1)
    with pytest.raises(ValueError, match="time order"):
        tracker.probe_started(1, T0 + 0.5)


def test_probe_ids_are_checked() -> None:
    """Duplicate starts, unknown ids and double finishes are rejected."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    tracker.probe_started(7, T0)
    with pytest.raises(ValueError, match="already started"):
        tracker.probe_started(7, T0 + 1)
    with pytest.raises(ValueError, match="never started"):
        tracker.probe_finished(8, True)
    tracker.probe_finished(7, False)
    with pytest.raises(ValueError, match="already finished"):
        tracker.probe_finished(7, True)


def test_closed_tracker_rejects_events() -> None:
    """After close, neither starts nor finishes are accepted."""
    tracker = RecoveryTracker(T0, consecutive=1, timeout=10.0)
    tracker.close()
    with pytest.raises(ValueError, match="closed"):
        tracker.probe_started(0, T0)
    with pytest.raises(ValueError, match="closed"):
        tracker.probe_finished(0, True)


@pytest.mark.parametrize(
    ("t0", "consecutive", "timeout", "message"),
    [
        (math.inf, 1, 1.0, "t0"),
        (T0, 0, 1.0, "consecutive"),
        (T0, 1, 0.0, "timeout"),
        (T0, 1, math.nan, "timeout"),
    ],
)
def test_tracker_rejects_bad_settings(
    t0: float, consecutive: int, timeout: float, message: str
) -> None:
    """Non-finite T0, consecutive < 1 and a non-positive timeout are rejected."""
    with pytest.raises(ValueError, match=message):
        RecoveryTracker(t0, consecutive, timeout)


# Property: the tracker agrees with a brute-force reading of the rule


def reference(
    starts: Sequence[float], results: Sequence[bool | None], consecutive: int, closed: bool
) -> tuple[str, float | None]:
    """Apply the spec's rule by brute force to what is known so far."""
    for first in range(len(results) - consecutive + 1):
        window = results[first : first + consecutive]
        if None in results[:first] or None in window:
            break
        if all(window):
            return "recovered", starts[first]
    return ("not_recovered" if closed else "pending"), None


def sure(results: Sequence[bool | None], consecutive: int) -> bool:
    """Return whether some window of finished probes is all good."""
    return any(
        all(r is True for r in results[first : first + consecutive])
        for first in range(len(results) - consecutive + 1)
    )


@given(
    consecutive=st.integers(1, 4),
    probes=st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5]), st.booleans()), max_size=12),
    data=st.data(),
)
def test_tracker_matches_brute_force_on_random_timelines(
    consecutive: int, probes: list[tuple[float, bool]], data: st.DataObject
) -> None:
    """On random starts, results and completion orders, the tracker decides as the rule says."""
    starts: list[float] = []
    for gap, _ in probes:
        starts.append((starts[-1] if starts else T0) + gap)
    goods = [good for _, good in probes]
    known: list[bool | None] = []
    tracker = RecoveryTracker(T0, consecutive=consecutive, timeout=10.0)
    pending: list[int] = []
    was_sure = False
    while len(known) < len(probes) or pending:
        moves = (["start"] if len(known) < len(probes) else []) + pending
        move = data.draw(st.sampled_from(moves))
        if move == "start":
            pending.append(len(known))
            tracker.probe_started(len(known), starts[len(known)])
            known.append(None)
        else:
            assert isinstance(move, int)
            pending.remove(move)
            tracker.probe_finished(move, goods[move])
            known[move] = goods[move]
        state, recovered_at = reference(starts, known, consecutive, closed=False)
        decision = tracker.decision()
        assert (decision.state, decision.recovered_at) == (state, recovered_at)
        assert tracker.wants_more_probes(T0) is not sure(known, consecutive)
        was_sure = was_sure or sure(known, consecutive)
    final = tracker.close()
    assert (final.state, final.recovered_at) == reference(starts, goods, consecutive, closed=True)
    assert final.probes_started == final.probes_finished == len(probes)
    assert final.good == sum(goods)
    # Stopping probing early is safe: a sure recovery is never lost.
    if was_sure:
        assert final.state == "recovered"
