"""Fire each target-scenario pair on its schedule with APScheduler 3 (AsyncIOScheduler).

The scheduler only decides *when*; a due pair is handed to a callback that queues the
run. Jobs are coalesced (``coalesce=True``, one instance at a time) so a loop that fell
behind fires once, not once per missed slot; slots missed past the grace time are
reported so that they are counted, never silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from spikewatch.config import ScheduleConfig

log = logging.getLogger(__name__)

#: The first interval run of a pair comes this soon after start (or reload), at most,
#: so that a fresh daemon shows figures within seconds instead of after one interval.
FIRST_RUN_WITHIN = 10.0

#: A slot whose fire is later than this is reported as missed rather than fired late.
MISFIRE_GRACE = 60


def describe_schedule(schedule: ScheduleConfig) -> str:
    """Return a schedule in a few words: ``every 15m ±30s`` or ``cron */5 * * * * (UTC)``."""
    if schedule.cron is not None:
        return f"cron {schedule.cron} ({schedule.timezone})"
    assert schedule.every is not None
    jitter = f" ±{schedule.jitter:g}s" if schedule.jitter else ""
    return f"every {schedule.every:g}s{jitter}"


#: Interval schedules of sharded replicas count from here, so all replicas share slots.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def build_trigger(
    schedule: ScheduleConfig, *, aligned: bool = False
) -> IntervalTrigger | CronTrigger:
    """Return the APScheduler trigger of a schedule.

    ``aligned`` makes an interval fire at multiples of ``every`` since the Unix epoch
    (cron is wall-clock aligned anyway), for replicas that must fire together.
    """
    jitter = schedule.jitter or None
    if schedule.cron is not None:
        trigger = CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone)
        trigger.jitter = jitter
        return trigger
    assert schedule.every is not None
    if aligned:
        return IntervalTrigger(
            seconds=schedule.every, jitter=jitter, start_date=EPOCH, timezone=schedule.timezone
        )
    return IntervalTrigger(seconds=schedule.every, jitter=jitter, timezone=schedule.timezone)


def job_id(target: str, scenario: str) -> str:
    """Return the job id of a pair (names are ``[a-z0-9_-]+``, so ``/`` is free)."""
    return f"{target}/{scenario}"


class RunScheduler:
    """Keep one APScheduler job per pair and report when each is due or missed."""

    def __init__(
        self,
        on_due: Callable[[str, str], None],
        on_missed: Callable[[str, str], None],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        aligned: bool = False,
    ) -> None:
        self.aligned = aligned
        self._on_due = on_due
        self._on_missed = on_missed
        self._now = now
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        self._schedules: dict[str, str] = {}

    @property
    def running(self) -> bool:
        """Whether the scheduler is started."""
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start scheduling (inside the running event loop)."""
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling; runs already queued are the dispatcher's business."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def apply(self, pairs: Iterable[tuple[str, str, ScheduleConfig]]) -> None:
        """Make the jobs match the given pairs (after start or a reload).

        A pair whose schedule did not change keeps its job and its next run time, so
        that a reload does not make every pair run again at once.
        """
        wanted = {job_id(t, s): (t, s, schedule) for t, s, schedule in pairs}
        for stale in set(self._schedules) - set(wanted):
            self._scheduler.remove_job(stale)
            del self._schedules[stale]
        now = self._now()
        for key, (target, scenario, schedule) in wanted.items():
            described = describe_schedule(schedule) + (" (aligned)" if self.aligned else "")
            if self._schedules.get(key) == described:
                continue
            # APScheduler reads an explicit next_run_time=None as "add paused": pass it
            # only when we set one (interval schedules); cron follows its trigger.
            extra: dict[str, Any] = {}
            if schedule.every is not None and not self.aligned:
                first = now + timedelta(seconds=min(schedule.every, FIRST_RUN_WITHIN))
                extra["next_run_time"] = first
            self._scheduler.add_job(
                self._fire,
                build_trigger(schedule, aligned=self.aligned),
                args=(target, scenario),
                id=key,
                name=key,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE,
                replace_existing=True,
                **extra,
            )
            self._schedules[key] = described

    def schedule_of(self, target: str, scenario: str) -> str:
        """Return the schedule of a pair in words ('' when unknown)."""
        return self._schedules.get(job_id(target, scenario), "")

    def next_run(self, target: str, scenario: str) -> float | None:
        """Return when a pair is due next (epoch seconds), or None."""
        job = self._scheduler.get_job(job_id(target, scenario))
        if job is None or job.next_run_time is None:
            return None
        return float(job.next_run_time.timestamp())

    async def _fire(self, target: str, scenario: str) -> None:
        # A coroutine, so that AsyncIOExecutor runs it on the loop, not in a thread.
        self._on_due(target, scenario)

    def _missed(self, event: JobExecutionEvent) -> None:
        target, _, scenario = str(event.job_id).partition("/")
        log.warning(
            "run of %s/%s missed its slot by more than %ss", target, scenario, MISFIRE_GRACE
        )
        self._on_missed(target, scenario)
