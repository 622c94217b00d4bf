"""Tests for spikewatch.engine.registry."""

from __future__ import annotations

from spikewatch.engine.registry import ConnectionRegistry


class FakeConnection:
    """A closable connection that counts how often it was aborted."""

    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


def test_acquire_takes_slots_up_to_the_limit() -> None:
    """Slots are given until the limit, then refused."""
    registry = ConnectionRegistry(2)
    assert registry.open == 0
    assert registry.try_acquire()
    assert registry.try_acquire()
    assert registry.open == 2
    assert not registry.try_acquire()
    assert registry.open == 2


def test_release_frees_a_slot_for_the_next_acquire() -> None:
    """A released slot can be taken again."""
    registry = ConnectionRegistry(1)
    assert registry.try_acquire()
    assert not registry.try_acquire()
    registry.release()
    assert registry.open == 0
    assert registry.try_acquire()


def test_peak_remembers_the_most_open_at_once() -> None:
    """The peak is the highest count of slots in use, not the current one."""
    registry = ConnectionRegistry(10)
    for _ in range(3):
        registry.try_acquire()
    registry.release()
    registry.release()
    registry.try_acquire()
    assert registry.open == 2
    assert registry.peak == 3


def test_refused_acquire_leaves_the_peak_alone() -> None:
    """A refused slot is not counted in the peak."""
    registry = ConnectionRegistry(1)
    registry.try_acquire()
    registry.try_acquire()
    assert registry.peak == 1
    assert registry.limit == 1


def test_abort_all_aborts_every_tracked_connection() -> None:
    """abort_all aborts each live connection once and returns how many there were."""
    registry = ConnectionRegistry(10)
    conns = [FakeConnection() for _ in range(3)]
    for conn in conns:
        registry.track(conn)
    assert registry.abort_all() == 3
    assert [c.aborted for c in conns] == [1, 1, 1]


def test_forgotten_connection_is_not_aborted() -> None:
    """A connection forgotten before abort_all is left alone; forgetting twice is harmless."""
    registry = ConnectionRegistry(10)
    kept, gone = FakeConnection(), FakeConnection()
    registry.track(kept)
    registry.track(gone)
    registry.forget(gone)
    registry.forget(gone)
    assert registry.abort_all() == 1
    assert (kept.aborted, gone.aborted) == (1, 0)


def test_abort_all_without_connections() -> None:
    """abort_all with nothing tracked returns 0."""
    assert ConnectionRegistry(1).abort_all() == 0


def test_connection_that_forgets_itself_while_aborted() -> None:
    """A connection may forget itself from its abort() without upsetting abort_all."""
    registry = ConnectionRegistry(10)

    class SelfForgetting(FakeConnection):
        def abort(self) -> None:
            super().abort()
            registry.forget(self)

    conns = [SelfForgetting() for _ in range(3)]
    for conn in conns:
        registry.track(conn)
    assert registry.abort_all() == 3
    assert all(c.aborted == 1 for c in conns)
    assert registry.abort_all() == 0
