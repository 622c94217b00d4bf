"""Tests for spikewatch.daemon.schedule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from spikewatch.config.model import ScheduleConfig
from spikewatch.daemon.schedule import (
    FIRST_RUN_WITHIN,
    MISFIRE_GRACE,
    RunScheduler,
    build_trigger,
    describe_schedule,
    job_id,
)
from tests.conftest import scaled

Pair = tuple[str, str]


# --- schedules in words and as triggers ---------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (ScheduleConfig(every=900, jitter=30), "every 900s ±30s"),
        (ScheduleConfig(every=0.2), "every 0.2s"),
        (ScheduleConfig(), "every 900s"),
        (ScheduleConfig(cron="*/5 * * * *"), "cron */5 * * * * (UTC)"),
        (
            ScheduleConfig(cron="0 3 * * 1", timezone="Europe/Paris"),
            "cron 0 3 * * 1 (Europe/Paris)",
        ),
    ],
)
def test_describe_schedule(schedule: ScheduleConfig, text: str) -> None:
    """A schedule reads as every N s (± jitter) or as its cron line with the time zone."""
    assert describe_schedule(schedule) == text


def test_interval_trigger_with_jitter() -> None:
    """every/jitter becomes an interval trigger with that period and jitter."""
    trigger = build_trigger(ScheduleConfig(every=900, jitter=30))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == timedelta(seconds=900)
    assert trigger.jitter == 30
    assert str(trigger.timezone) == "UTC"


def test_interval_trigger_without_jitter() -> None:
    """A zero jitter is no jitter at all."""
    trigger = build_trigger(ScheduleConfig(every=0.5))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == timedelta(seconds=0.5)
    assert trigger.jitter is None


def test_cron_trigger_in_its_time_zone() -> None:
    """A cron schedule fires at the crontab's times in the schedule's time zone."""
    trigger = build_trigger(ScheduleConfig(cron="0 3 * * *", timezone="Europe/Paris"))
    assert isinstance(trigger, CronTrigger)
    assert str(trigger.timezone) == "Europe/Paris"
    assert trigger.jitter is None
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 7, 1, 12, 0, tzinfo=paris)
    fire = trigger.get_next_fire_time(None, start)
    assert fire == datetime(2026, 7, 2, 3, 0, tzinfo=paris)
    assert fire.astimezone(UTC).hour == 1  # CEST is UTC+2


def test_cron_trigger_with_jitter() -> None:
    """A cron schedule keeps its jitter."""
    trigger = build_trigger(ScheduleConfig(cron="*/30 * * * *", jitter=15))
    assert isinstance(trigger, CronTrigger)
    assert trigger.jitter == 15


def test_job_id() -> None:
    """A pair's job id is target/scenario."""
    assert job_id("chat-staging", "avalanche") == "chat-staging/avalanche"


# --- the scheduler on a running loop --------------------------------------------------------


class Calls:
    """on_due / on_missed callbacks that record their pairs and signal each call."""

    def __init__(self) -> None:
        self.due: list[Pair] = []
        self.missed: list[Pair] = []
        self.due_event = asyncio.Event()
        self.missed_event = asyncio.Event()

    def on_due(self, target: str, scenario: str) -> None:
        self.due.append((target, scenario))
        self.due_event.set()

    def on_missed(self, target: str, scenario: str) -> None:
        self.missed.append((target, scenario))
        self.missed_event.set()


MakeScheduler = Callable[..., RunScheduler]  # (calls, now=None)


@pytest.fixture
async def make_scheduler() -> AsyncIterator[MakeScheduler]:
    """Build schedulers on the test's loop; shut down those still running afterwards."""
    made: list[RunScheduler] = []

    def make(calls: Calls, now: Callable[[], datetime] | None = None) -> RunScheduler:
        if now is None:
            scheduler = RunScheduler(calls.on_due, calls.on_missed)
        else:
            scheduler = RunScheduler(calls.on_due, calls.on_missed, now=now)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown()
    await asyncio.sleep(0)  # shutdown is deferred to the loop


async def test_due_pair_is_handed_to_on_due(make_scheduler: MakeScheduler) -> None:
    """A pair with a short interval is reported due with its target and scenario."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    scheduler.apply([("t", "s", ScheduleConfig(every=0.2))])
    async with asyncio.timeout(scaled(5)):
        await calls.due_event.wait()
    assert calls.due == [("t", "s")]
    assert calls.missed == []


async def test_next_run_is_in_the_future(make_scheduler: MakeScheduler) -> None:
    """next_run is an epoch time ahead of now, and None for a pair without a job."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    before = datetime.now(UTC).timestamp()
    scheduler.apply([("t", "s", ScheduleConfig(every=0.2))])
    next_run = scheduler.next_run("t", "s")
    assert next_run is not None
    assert before < next_run <= before + 0.2 + scaled(1)
    assert scheduler.next_run("t", "other") is None
    assert scheduler.next_run("nobody", "s") is None


async def test_first_interval_run_comes_within_first_run_within(
    make_scheduler: MakeScheduler,
) -> None:
    """A long interval runs first FIRST_RUN_WITHIN after apply(), by the scheduler's clock."""
    calls = Calls()
    now = datetime.now(UTC)
    scheduler = make_scheduler(calls, now=lambda: now)
    scheduler.start()
    scheduler.apply([("t", "s", ScheduleConfig(every=3600))])
    assert scheduler.next_run("t", "s") == (now + timedelta(seconds=FIRST_RUN_WITHIN)).timestamp()


async def test_cron_pair_runs_at_its_next_slot(make_scheduler: MakeScheduler) -> None:
    """A cron pair's next run is the crontab's next slot, not FIRST_RUN_WITHIN."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    before = datetime.now(UTC).timestamp()
    scheduler.apply([("t", "s", ScheduleConfig(cron="*/30 * * * *"))])
    next_run = scheduler.next_run("t", "s")
    assert next_run is not None
    assert before < next_run <= before + 1800
    assert next_run % 1800 == 0


async def test_schedule_of_describes_each_pair(make_scheduler: MakeScheduler) -> None:
    """schedule_of reads a pair's schedule in words, '' for unknown pairs."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    scheduler.apply(
        [
            ("t", "a", ScheduleConfig(every=900, jitter=30)),
            ("t", "b", ScheduleConfig(cron="*/5 * * * *")),
        ]
    )
    assert scheduler.schedule_of("t", "a") == "every 900s ±30s"
    assert scheduler.schedule_of("t", "b") == "cron */5 * * * * (UTC)"
    assert scheduler.schedule_of("t", "c") == ""


async def test_apply_again_replaces_changed_and_drops_stale_jobs(
    make_scheduler: MakeScheduler,
) -> None:
    """A second apply() (a reload) drops pairs it no longer names and adds or changes the rest."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    scheduler.apply(
        [("old", "s", ScheduleConfig(every=900)), ("changed", "s", ScheduleConfig(every=900))]
    )
    scheduler.apply(
        [
            ("changed", "s", ScheduleConfig(every=600, jitter=5)),
            ("new", "s", ScheduleConfig(every=60)),
        ]
    )
    assert scheduler.next_run("old", "s") is None
    assert scheduler.schedule_of("old", "s") == ""
    assert scheduler.schedule_of("changed", "s") == "every 600s ±5s"
    assert scheduler.next_run("changed", "s") is not None
    assert scheduler.schedule_of("new", "s") == "every 60s"
    assert scheduler.next_run("new", "s") is not None


async def test_apply_again_keeps_unchanged_jobs(make_scheduler: MakeScheduler) -> None:
    """A pair whose schedule did not change keeps its next run across a reload."""
    calls = Calls()
    clock = [datetime.now(UTC)]
    scheduler = make_scheduler(calls, now=lambda: clock[0])
    scheduler.start()
    scheduler.apply([("t", "kept", ScheduleConfig(every=900)), ("t", "moved", ScheduleConfig())])
    kept = scheduler.next_run("t", "kept")
    clock[0] += timedelta(seconds=5)
    scheduler.apply(
        [("t", "kept", ScheduleConfig(every=900)), ("t", "moved", ScheduleConfig(every=450))]
    )
    assert scheduler.next_run("t", "kept") == kept
    assert scheduler.next_run("t", "moved") == (clock[0] + timedelta(seconds=10)).timestamp()


async def test_apply_before_start_is_scheduled_once_started(
    make_scheduler: MakeScheduler,
) -> None:
    """Jobs applied before start() fire once the scheduler runs."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.apply([("t", "s", ScheduleConfig(every=0.2))])
    assert scheduler.schedule_of("t", "s") == "every 0.2s"
    scheduler.start()
    async with asyncio.timeout(scaled(5)):
        await calls.due_event.wait()
    assert calls.due == [("t", "s")]


async def test_start_and_shutdown(make_scheduler: MakeScheduler) -> None:
    """running follows start() and shutdown(); shutting down twice is harmless."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    assert not scheduler.running
    scheduler.shutdown()  # not started: nothing to do
    scheduler.start()
    assert scheduler.running
    scheduler.shutdown()
    await asyncio.sleep(0)  # AsyncIOScheduler defers the shutdown to the loop
    assert not scheduler.running
    scheduler.shutdown()


async def test_no_run_fires_after_shutdown(make_scheduler: MakeScheduler) -> None:
    """After shutdown() a due pair is not reported any more."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    scheduler.start()
    scheduler.apply([("t", "s", ScheduleConfig(every=0.05))])
    scheduler.shutdown()
    await asyncio.sleep(0)
    assert not scheduler.running
    # No clock to wait on for "nothing happened": a control scheduler, given the same
    # schedule just after, fires its slots; each comes after the one that would have
    # come from the stopped scheduler, on the same loop (timers and tasks run in order).
    control = Calls()
    running = make_scheduler(control)
    running.start()
    running.apply([("t", "s", ScheduleConfig(every=0.05))])
    async with asyncio.timeout(scaled(5)):
        while len(control.due) < 3:  # several slots: none may fire
            control.due_event.clear()
            await control.due_event.wait()
    assert calls.due == []


async def test_slot_missed_past_grace_is_reported(
    make_scheduler: MakeScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    """A slot that comes more than MISFIRE_GRACE late is reported missed, not run."""
    calls = Calls()
    # A clock two hours behind: the first slot, and the one an hour later, are long past.
    scheduler = make_scheduler(calls, now=lambda: datetime.now(UTC) - timedelta(hours=2))
    scheduler.start()
    with caplog.at_level(logging.WARNING, logger="spikewatch.daemon.schedule"):
        scheduler.apply([("chat-staging", "avalanche", ScheduleConfig(every=3600))])
        async with asyncio.timeout(scaled(5)):
            await calls.missed_event.wait()
    assert calls.missed == [("chat-staging", "avalanche")]  # coalesced: reported once
    assert calls.due == []
    messages = [r.getMessage() for r in caplog.records if r.name == "spikewatch.daemon.schedule"]
    assert messages == [
        f"run of chat-staging/avalanche missed its slot by more than {MISFIRE_GRACE}s"
    ]
    next_run = scheduler.next_run("chat-staging", "avalanche")
    assert next_run is not None
    assert next_run > datetime.now(UTC).timestamp()


async def test_missed_listener_splits_the_job_id(make_scheduler: MakeScheduler) -> None:
    """The missed-slot listener hands on_missed the target and scenario of the job."""
    calls = Calls()
    scheduler = make_scheduler(calls)
    event = JobExecutionEvent(EVENT_JOB_MISSED, "t/s", None, datetime.now(UTC))
    scheduler._missed(event)
    assert calls.missed == [("t", "s")]
