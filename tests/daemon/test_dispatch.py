"""Tests for spikewatch.daemon.dispatch."""

from __future__ import annotations

import asyncio
import logging

import pytest

from spikewatch.daemon.dispatch import RunDispatcher
from spikewatch.daemon.history import RunEntry
from spikewatch.daemon.state import AlreadyQueuedError, QueueFullError
from tests.conftest import scaled


def entry(target: str = "t", scenario: str = "s", run_id: str | None = None) -> RunEntry:
    """Return a queued entry for a pair."""
    return RunEntry(
        id=run_id or f"{target}-{scenario}",
        target=target,
        scenario=scenario,
        trigger="api",
        queued_at=0.0,
    )


class Runs:
    """An ``execute`` whose runs start when called and end when the test says so."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running: set[str] = set()
        self.most_at_once = 0
        self.cancelled: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self._failures: dict[str, Exception] = {}
        self._changed = asyncio.Event()

    def fail(self, run_id: str, exc: Exception) -> None:
        """Make run ``run_id`` raise ``exc`` when released."""
        self._failures[run_id] = exc

    def finish(self, run_id: str) -> None:
        """Let run ``run_id`` end."""
        self._release.setdefault(run_id, asyncio.Event()).set()

    async def __call__(self, run: RunEntry) -> None:
        self.started.append(run.id)
        self.running.add(run.id)
        self.most_at_once = max(self.most_at_once, len(self.running))
        self._notify()
        try:
            await self._release.setdefault(run.id, asyncio.Event()).wait()
            if run.id in self._failures:
                raise self._failures[run.id]
        except asyncio.CancelledError:
            self.cancelled.append(run.id)
            raise
        finally:
            self.running.discard(run.id)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_started(self, count: int) -> None:
        """Wait until ``count`` runs have started."""
        async with asyncio.timeout(scaled(5)):
            while len(self.started) < count:
                await self._changed.wait()


async def wait_state(run: RunEntry, state: str) -> None:
    """Let the loop turn until ``run`` reaches ``state`` (bounded)."""
    async with asyncio.timeout(scaled(5)):
        while run.state != state:
            await asyncio.sleep(0)


async def wait_ended(dispatcher: RunDispatcher, run: RunEntry) -> None:
    """Let the loop turn until ``run`` is done and the dispatcher has let go of its pair."""
    await wait_state(run, "done")
    async with asyncio.timeout(scaled(5)):
        while dispatcher.state_of((run.target, run.scenario)) != "idle":
            await asyncio.sleep(0)


@pytest.fixture
def runs() -> Runs:
    """The controllable execute."""
    return Runs()


def test_new_dispatcher_is_empty() -> None:
    """A fresh dispatcher holds nothing and knows every pair as idle."""
    dispatcher = RunDispatcher(Runs(), max_concurrent=1, max_queued=1)
    assert (dispatcher.queued, dispatcher.running) == (0, 0)
    assert dispatcher.state_of(("t", "s")) == "idle"


async def test_entry_goes_queued_running_done(runs: Runs) -> None:
    """A submitted run starts at once when a slot is free, and ends done."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=4)
    run = entry()
    dispatcher.submit(run)
    assert run.state == "running"
    assert dispatcher.state_of(("t", "s")) == "running"
    await runs.wait_started(1)
    runs.finish(run.id)
    await wait_ended(dispatcher, run)
    assert (dispatcher.queued, dispatcher.running) == (0, 0)


async def test_pair_is_free_once_its_run_is_done(runs: Runs) -> None:
    """When an entry reads done, its pair is idle again and can be queued at once."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=4)
    first = entry("t", "s", "first")
    dispatcher.submit(first)
    await runs.wait_started(1)
    runs.finish("first")
    await wait_state(first, "done")
    assert dispatcher.state_of(("t", "s")) == "idle"
    dispatcher.submit(entry("t", "s", "again"))
    await runs.wait_started(2)
    runs.finish("again")


async def test_at_most_max_concurrent_run_at_once(runs: Runs) -> None:
    """Runs past max_concurrent wait queued until a running one ends."""
    dispatcher = RunDispatcher(runs, max_concurrent=2, max_queued=10)
    entries = [entry(f"t{i}") for i in range(5)]
    for run in entries:
        dispatcher.submit(run)
    await runs.wait_started(2)
    assert (dispatcher.running, dispatcher.queued) == (2, 3)
    assert [r.state for r in entries] == ["running", "running", "queued", "queued", "queued"]
    assert dispatcher.state_of(("t2", "s")) == "queued"
    for i, run in enumerate(entries):
        runs.finish(run.id)
        await wait_ended(dispatcher, run)
        if i + 2 < len(entries):
            await runs.wait_started(i + 3)
    assert runs.most_at_once == 2
    assert (dispatcher.running, dispatcher.queued) == (0, 0)


async def test_runs_start_in_submission_order(runs: Runs) -> None:
    """Queued runs start first in, first out."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=10)
    ids = ["a", "b", "c", "d"]
    for run_id in ids:
        dispatcher.submit(entry(run_id, run_id, run_id))
    for count, run_id in enumerate(ids, start=1):
        await runs.wait_started(count)
        runs.finish(run_id)
    await runs.wait_started(len(ids))
    assert runs.started == ids


async def test_queued_pair_is_refused(runs: Runs) -> None:
    """A pair already waiting in the queue cannot be queued again."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=10)
    dispatcher.submit(entry("busy", "s"))
    dispatcher.submit(entry("t", "s", "first"))
    with pytest.raises(AlreadyQueuedError, match=r"t/s is already queued \(run first\)"):
        dispatcher.submit(entry("t", "s", "second"))
    assert dispatcher.queued == 1


async def test_running_pair_is_refused(runs: Runs) -> None:
    """A pair whose run is in flight cannot be queued again until it ends."""
    dispatcher = RunDispatcher(runs, max_concurrent=2, max_queued=10)
    first = entry("t", "s", "first")
    dispatcher.submit(first)
    with pytest.raises(AlreadyQueuedError, match=r"already running \(run first\)") as info:
        dispatcher.submit(entry("t", "s", "second"))
    assert info.value.status == 409
    dispatcher.submit(entry("t", "other"))  # the same target with another scenario is fine
    runs.finish("first")
    await wait_ended(dispatcher, first)
    dispatcher.submit(entry("t", "s", "third"))
    await runs.wait_started(3)
    assert runs.started == ["first", "t-other", "third"]


async def test_full_queue_is_refused(runs: Runs) -> None:
    """Past max_queued waiting entries a new run is refused; running ones do not count."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=2)
    for i in range(3):
        dispatcher.submit(entry(f"t{i}"))
    with pytest.raises(QueueFullError, match=r"the run queue is full \(2 waiting\)") as info:
        dispatcher.submit(entry("t3"))
    assert info.value.status == 429
    assert dispatcher.state_of(("t3", "s")) == "idle"
    assert (dispatcher.running, dispatcher.queued) == (1, 2)


async def test_crashed_run_is_logged_and_the_next_starts(
    runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    """An execute that raises is logged with its traceback, ends done, and frees the slot."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=4)
    crashing, following = entry("t", "s", "crash"), entry("u", "s", "next")
    runs.fail("crash", RuntimeError("boom"))
    dispatcher.submit(crashing)
    dispatcher.submit(following)
    await runs.wait_started(1)
    with caplog.at_level(logging.ERROR, logger="spikewatch.daemon.dispatch"):
        runs.finish("crash")
        await runs.wait_started(2)
    assert crashing.state == "done"
    assert following.state == "running"
    [record] = [r for r in caplog.records if r.name == "spikewatch.daemon.dispatch"]
    assert record.getMessage() == "run crash of t/s crashed"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    runs.finish("next")
    await wait_state(following, "done")


async def test_execute_that_sets_its_own_final_state_keeps_it(runs: Runs) -> None:
    """A run whose execute already marked the entry is not overwritten with done."""

    async def execute(run: RunEntry) -> None:
        run.state = "cancelled"

    dispatcher = RunDispatcher(execute, max_concurrent=1, max_queued=1)
    run = entry()
    dispatcher.submit(run)
    async with asyncio.timeout(scaled(5)):
        while dispatcher.running:
            await asyncio.sleep(0)
    assert run.state == "cancelled"
    assert dispatcher.state_of(("t", "s")) == "idle"


async def test_cancel_all_cancels_running_and_queued(runs: Runs) -> None:
    """cancel_all cancels runs in flight and drops queued ones; all end within grace."""
    dispatcher = RunDispatcher(runs, max_concurrent=2, max_queued=10)
    entries = [entry(f"t{i}") for i in range(4)]
    for run in entries:
        dispatcher.submit(run)
    await runs.wait_started(2)
    assert await dispatcher.cancel_all(scaled(5)) is True
    assert [r.state for r in entries] == ["cancelled"] * 4
    assert sorted(runs.cancelled) == ["t0-s", "t1-s"]
    assert runs.started == ["t0-s", "t1-s"]  # queued ones never started
    assert (dispatcher.running, dispatcher.queued) == (0, 0)
    assert dispatcher.state_of(("t3", "s")) == "idle"


async def test_cancel_all_without_runs_is_immediate(runs: Runs) -> None:
    """With nothing in flight cancel_all returns True at once."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=1)
    assert await dispatcher.cancel_all(0.0) is True


async def test_cancel_all_reports_runs_that_outlive_grace() -> None:
    """A run that ignores cancellation past grace makes cancel_all return False."""
    stubborn_done = asyncio.Event()
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn(run: RunEntry) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # cleanup that takes longer than the grace
            stubborn_done.set()

    dispatcher = RunDispatcher(stubborn, max_concurrent=1, max_queued=1)
    run = entry()
    dispatcher.submit(run)
    async with asyncio.timeout(scaled(5)):
        await started.wait()
    assert await dispatcher.cancel_all(0.01) is False
    release.set()
    async with asyncio.timeout(scaled(5)):
        await stubborn_done.wait()
        while dispatcher.running:
            await asyncio.sleep(0)
    # It swallowed the cancellation and ended normally, so it counts as done.
    assert run.state == "done"


async def test_submit_after_cancel_all_is_refused(runs: Runs) -> None:
    """Once shutting down the dispatcher takes no more runs."""
    dispatcher = RunDispatcher(runs, max_concurrent=1, max_queued=1)
    await dispatcher.cancel_all(scaled(1))
    with pytest.raises(QueueFullError, match="shutting down"):
        dispatcher.submit(entry())
    assert dispatcher.state_of(("t", "s")) == "idle"
