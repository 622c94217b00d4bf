"""The burst, recovery and capacity rules of the reference target, on a fake clock."""

from __future__ import annotations

import dataclasses

import pytest

from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.degrade import TargetState
from tests.builders import EPOCH, FakeClock

BURSTY = TargetBehaviour(
    burst_threshold=3, burst_window=1.0, recovery_delay=5.0, slow_delay=0.25, handshake_delay=0.1
)


def make_state(behaviour: TargetBehaviour = BURSTY) -> tuple[TargetState, FakeClock]:
    clock = FakeClock()
    return TargetState(behaviour, clock=clock, wall_clock=clock.wall), clock


def arrive(state: TargetState, clock: FakeClock, times: list[float]) -> list[bool]:
    degraded = []
    for at in times:
        clock.now = at
        degraded.append(state.upgrade_requested().degraded)
    return degraded


def open_connection(state: TargetState) -> int:
    assert state.reserve()
    return state.opened()


def test_no_burst_below_threshold() -> None:
    """Fewer than burst_threshold requests within the window do not degrade the target."""
    state, clock = make_state()
    assert arrive(state, clock, [100.0, 100.5, 101.2, 101.9]) == [False] * 4
    assert state.stats()["bursts"] == 0
    assert state.stats()["degraded"] is False


def test_threshold_requests_within_window_make_a_burst() -> None:
    """The request that brings the window's count to the threshold is degraded and counted."""
    state, clock = make_state()
    assert arrive(state, clock, [100.0, 100.3, 100.6]) == [False, False, True]
    stats = state.stats()
    assert stats["bursts"] == 1
    assert stats["degraded"] is True
    assert stats["last_burst_epoch"] == pytest.approx(EPOCH + 100.6)
    assert stats["degraded_until_epoch"] == pytest.approx(EPOCH + 105.6)


def test_window_is_exclusive_of_its_far_edge() -> None:
    """A request exactly burst_window old no longer counts toward a burst."""
    state, clock = make_state()
    assert arrive(state, clock, [100.0, 100.5, 101.0]) == [False, False, False]


def test_degraded_until_recovery_delay_after_last_burst_request() -> None:
    """Degradation lasts recovery_delay after the last request that was part of the burst."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2, 100.3])
    clock.now = 105.29
    assert state.stats()["degraded"] is True
    clock.now = 105.3
    assert state.stats()["degraded"] is False
    assert state.stats()["degraded_until_epoch"] == pytest.approx(EPOCH + 105.3)


def test_requests_while_degraded_get_slow_delay() -> None:
    """A lone request during recovery is slowed by slow_delay; after recovery it is not."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2])
    clock.now = 103.0
    slow = state.upgrade_requested()
    assert slow.degraded is True
    assert slow.delay == pytest.approx(0.35)
    assert slow.burst_started is False
    clock.now = 110.0
    fast = state.upgrade_requested()
    assert fast.degraded is False
    assert fast.delay == pytest.approx(0.1)


def test_lone_request_during_recovery_does_not_extend_it() -> None:
    """Only requests that are part of a burst push the end of the degradation."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2, 104.0])
    assert state.stats()["degraded_until_epoch"] == pytest.approx(EPOCH + 105.2)


def test_sustained_burst_counts_once() -> None:
    """Continuous burst traffic is one burst, even with no recovery delay."""
    behaviour = dataclasses.replace(BURSTY, recovery_delay=0.0)
    state, clock = make_state(behaviour)
    times = [100.0 + 0.1 * i for i in range(30)]
    degraded = arrive(state, clock, times)
    assert degraded == [False, False] + [True] * 28
    assert state.stats()["bursts"] == 1
    assert state.stats()["degraded"] is False


def test_second_burst_after_recovery_counts_again() -> None:
    """A burst after the target recovered is a new burst."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2])
    arrive(state, clock, [200.0, 200.1, 200.2])
    assert state.stats()["bursts"] == 2


def test_burst_during_recovery_extends_the_same_burst() -> None:
    """Burst traffic while still degraded extends the degradation without a new count."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2, 103.0, 103.1, 103.2])
    stats = state.stats()
    assert stats["bursts"] == 1
    assert stats["degraded_until_epoch"] == pytest.approx(EPOCH + 108.2)


def test_no_threshold_never_degrades() -> None:
    """Without burst_threshold every request gets only handshake_delay."""
    state, _ = make_state(TargetBehaviour(handshake_delay=0.05))
    arrivals = [state.upgrade_requested() for _ in range(100)]
    assert {a.delay for a in arrivals} == {0.05}
    assert state.stats()["requests"] == 100
    assert state.stats()["degraded_until_epoch"] is None


def test_drop_on_burst_names_every_connection_open_when_the_burst_starts() -> None:
    """A new burst drops every connection open before its first request, but none after."""
    state, clock = make_state(dataclasses.replace(BURSTY, drop_on_burst=True))
    clock.now = 50.0
    stable = [open_connection(state), open_connection(state)]
    clock.now = 100.0
    assert state.upgrade_requested().drop == ()
    early = open_connection(state)
    clock.now = 100.1
    state.upgrade_requested()
    clock.now = 100.2
    arrival = state.upgrade_requested()
    assert arrival.burst_started is True
    assert arrival.drop == (*stable, early)
    assert state.stats().dropped == 3
    for conn in arrival.drop:
        state.closed(conn)
    open_connection(state)
    clock.now = 100.3
    later = state.upgrade_requested()
    assert later.degraded is True
    assert later.drop == ()


def test_burst_without_drop_on_burst_drops_nothing() -> None:
    """Without drop_on_burst a burst leaves open connections alone."""
    state, clock = make_state()
    clock.now = 50.0
    open_connection(state)
    assert arrive(state, clock, [100.0, 100.1, 100.2])[-1] is True
    assert state.stats()["dropped"] == 0


def test_capacity_counts_reserved_and_open_slots() -> None:
    """Slots reserved for upgrades in progress count against capacity like open ones."""
    state, _ = make_state(TargetBehaviour(capacity=2))
    assert state.reserve()
    conn = state.opened()
    assert state.reserve()
    assert not state.reserve()
    state.release()
    assert state.reserve()
    assert not state.reserve()
    state.closed(conn)
    assert state.reserve()
    stats = state.stats()
    assert stats["rejected_capacity"] == 2
    assert stats["upgrades"] == 1
    assert stats["open"] == 0


def test_zero_capacity_refuses_everything() -> None:
    """capacity=0 refuses every upgrade."""
    state, _ = make_state(TargetBehaviour(capacity=0))
    assert not state.reserve()


def test_peak_open_and_connection_numbers() -> None:
    """Connections are numbered from 1 and peak_open keeps the highest open count."""
    state, _ = make_state(TargetBehaviour())
    conns = [open_connection(state) for _ in range(3)]
    assert conns == [1, 2, 3]
    for conn in conns:
        state.closed(conn)
    state.closed(conns[0])
    assert open_connection(state) == 4
    stats = state.stats()
    assert stats["peak_open"] == 3
    assert stats["open"] == 1
    assert stats["upgrades"] == 4


def test_stats_read_as_attributes_keys_or_a_dict() -> None:
    """TargetStats reads as attributes and as a mapping equal to its JSON dict."""
    state, _ = make_state()
    open_connection(state)
    stats = state.stats()
    assert stats.open == stats["open"] == 1
    assert stats == stats.as_dict()
    assert stats.as_dict() == stats
    assert list(stats) == list(stats.as_dict())
    assert len(stats) == 11
    assert stats.get("colour") is None
    with pytest.raises(KeyError):
        stats["colour"]


def test_auth_rejections_are_counted() -> None:
    """auth_rejected() counts into rejected_auth."""
    state, _ = make_state()
    state.auth_rejected()
    assert state.stats()["rejected_auth"] == 1


def test_retry_after_is_the_rest_of_the_recovery() -> None:
    """Retry-After is the whole seconds left of the degradation, at least 1."""
    state, clock = make_state()
    assert state.retry_after() == 1
    arrive(state, clock, [100.0, 100.1, 100.2])
    clock.now = 101.0
    assert state.retry_after() == 5
    clock.now = 105.1
    assert state.retry_after() == 1


def test_end_degradation_recovers_now_and_forgets_arrivals() -> None:
    """end_degradation() ends the degradation now and a new burst needs N fresh requests."""
    state, clock = make_state()
    arrive(state, clock, [100.0, 100.1, 100.2])
    clock.now = 100.5
    state.end_degradation()
    stats = state.stats()
    assert stats["degraded"] is False
    assert stats["degraded_until_epoch"] == pytest.approx(EPOCH + 100.5)
    assert stats["last_burst_epoch"] == pytest.approx(EPOCH + 100.2)
    assert arrive(state, clock, [100.6, 100.7, 100.8]) == [False, False, True]
    assert state.stats()["bursts"] == 2


def test_end_degradation_before_any_burst_keeps_null_times() -> None:
    """Ending a degradation that never began leaves the times null."""
    state, _ = make_state()
    state.end_degradation()
    assert state.stats()["degraded_until_epoch"] is None


def test_changing_threshold_live_keeps_recent_arrivals() -> None:
    """Lowering burst_threshold at runtime judges the next request on recent arrivals."""
    state, clock = make_state(dataclasses.replace(BURSTY, burst_threshold=10))
    assert arrive(state, clock, [100.0, 100.1]) == [False, False]
    state.behaviour = dataclasses.replace(BURSTY, burst_threshold=3)
    assert arrive(state, clock, [100.2]) == [True]
    state.behaviour = dataclasses.replace(BURSTY, burst_threshold=3, recovery_delay=1.0)
    assert state.behaviour.recovery_delay == 1.0
