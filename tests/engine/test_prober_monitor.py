"""Tests for spikewatch.engine.prober_monitor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from spikewatch.engine.clock import now as _now
from spikewatch.engine.prober_monitor import (
    MIN_CPU_WINDOW,
    Mark,
    ProberMonitor,
    PsutilSampler,
)
from tests.conftest import scaled

INTERVAL = 0.005


class FakeSampler:
    """A process whose CPU time and memory the test sets."""

    def __init__(self, cpu: float = 0.0, rss: int = 50_000_000) -> None:
        self.cpu = cpu
        self.rss = rss
        self.read = asyncio.Event()

    def cpu_seconds(self) -> float:
        self.read.set()
        return self.cpu

    def rss_bytes(self) -> int:
        return self.rss


class LagLog:
    """An on_lag callback that keeps every lag it is given and says when one comes."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.sampled = asyncio.Event()

    def __call__(self, lag: float) -> None:
        self.lags.append(lag)
        self.sampled.set()


async def wait_for_samples(log: LagLog, count: int) -> None:
    """Wait until ``log`` holds at least ``count`` samples (bounded)."""
    async with asyncio.timeout(scaled(5)):
        while len(log.lags) < count:
            log.sampled.clear()
            await log.sampled.wait()


def block_loop(seconds: float) -> None:
    """Keep the event loop busy for ``seconds``, as a heavy callback would."""
    # The behaviour under test: a callback that holds the loop for real, which is what
    # makes a timer late. No event could stand in for it.
    time.sleep(seconds)


def assert_no_sample_within(monitor: ProberMonitor, seconds: float) -> None:
    """No sample is scheduled in the next ``seconds`` (or none at all)."""
    due = monitor.next_sample_at
    assert due is None or due > _now() + seconds, due


async def test_samples_lag_while_started_and_calls_on_lag() -> None:
    """A started monitor samples every interval and hands each lag to on_lag."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start()
    try:
        await wait_for_samples(log, 5)
    finally:
        monitor.stop()
    assert all(lag >= 0.0 for lag in log.lags)


async def test_blocked_loop_shows_as_lag() -> None:
    """A callback that holds the loop makes the next sample late by about that much."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start()
    try:
        await wait_for_samples(log, 1)
        block_loop(0.05)
        await wait_for_samples(log, len(log.lags) + 1)
        p99 = monitor.recent_lag_p99(scaled(10))
    finally:
        monitor.stop()
    assert max(log.lags) >= 0.04
    assert p99 is not None
    assert p99 >= 0.04


async def test_start_and_stop_are_counted() -> None:
    """Sampling goes on until every user that started the monitor has stopped it."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start()
    monitor.start()
    monitor.stop()
    await wait_for_samples(log, 3)  # one user left: still sampling
    monitor.stop()
    assert monitor.next_sample_at is None, "the last user gone, no sample is scheduled"


async def test_stop_without_start_is_harmless() -> None:
    """Stopping more often than started neither fails nor leaves a debt for the next start."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.stop()
    monitor.start()
    try:
        await wait_for_samples(log, 2)
    finally:
        monitor.stop()


async def test_restart_after_stop_samples_again() -> None:
    """A monitor stopped by its last user can be started again."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start()
    await wait_for_samples(log, 1)
    monitor.stop()
    monitor.start()
    try:
        await wait_for_samples(log, len(log.lags) + 2)
    finally:
        monitor.stop()


#: An idle cadence no test waits for: a sample at it never comes within a test.
IDLE_NEVER = 3600.0


async def test_background_user_samples_at_the_idle_cadence() -> None:
    """With only a background user (the daemon between runs) samples come idle_interval apart."""
    log = LagLog()
    monitor = ProberMonitor(
        interval=INTERVAL, idle_interval=IDLE_NEVER, sampler=FakeSampler(), on_lag=log
    )
    monitor.start(background=True)
    try:
        assert monitor.sampling_interval == IDLE_NEVER
        assert_no_sample_within(monitor, IDLE_NEVER - scaled(5))
        assert log.lags == []
    finally:
        monitor.stop(background=True)


async def test_active_user_brings_the_next_sample_forward() -> None:
    """A run that starts while the next sample is an idle interval away gets samples at once.

    Then, its stop returns the monitor to the idle cadence: at most the sample already
    scheduled at the fast one still comes.
    """
    log = LagLog()
    monitor = ProberMonitor(
        interval=INTERVAL, idle_interval=IDLE_NEVER, sampler=FakeSampler(), on_lag=log
    )
    monitor.start(background=True)
    try:
        monitor.start()
        assert monitor.sampling_interval == INTERVAL
        await wait_for_samples(log, 3)
        monitor.stop()
        assert monitor.sampling_interval == IDLE_NEVER
        stopped_at = len(log.lags)
        due = monitor.next_sample_at
        assert due is not None
        assert due <= _now() + INTERVAL, "the sample already scheduled at the fast cadence"
        await wait_for_samples(log, stopped_at + 1)
        assert_no_sample_within(monitor, IDLE_NEVER - scaled(5))
    finally:
        monitor.stop(background=True)


async def test_second_active_user_keeps_the_schedule() -> None:
    """Only the first active user reschedules; a second one does not restart the interval."""
    log = LagLog()
    monitor = ProberMonitor(
        interval=INTERVAL, idle_interval=IDLE_NEVER, sampler=FakeSampler(), on_lag=log
    )
    monitor.start()
    monitor.start()
    try:
        await wait_for_samples(log, 2)
        monitor.stop()
        assert monitor.sampling_interval == INTERVAL  # one active user is left
        await wait_for_samples(log, len(log.lags) + 2)
    finally:
        monitor.stop()


def test_idle_interval_is_never_shorter_than_the_interval() -> None:
    """An idle cadence faster than the active one is taken as the active one."""
    monitor = ProberMonitor(interval=0.5, idle_interval=0.1, sampler=FakeSampler())
    assert monitor.sampling_interval == 0.5
    monitor.set_intervals(0.02, 0.25)
    assert monitor.sampling_interval == 0.25
    monitor.set_intervals(0.02)
    assert monitor.sampling_interval == 0.02


async def test_set_intervals_takes_effect_at_the_next_sample() -> None:
    """A reload's new cadence is what the next scheduled sample uses."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start(background=True)
    try:
        await wait_for_samples(log, 1)
        monitor.set_intervals(INTERVAL, IDLE_NEVER)
        await wait_for_samples(log, len(log.lags) + 1)  # the one already scheduled
        assert_no_sample_within(monitor, IDLE_NEVER - scaled(5))
    finally:
        monitor.stop(background=True)


async def test_samples_without_on_lag() -> None:
    """Without an on_lag callback samples are still kept for recent_lag_p99."""
    sampler = FakeSampler()
    monitor = ProberMonitor(interval=INTERVAL, sampler=sampler)
    monitor.start()
    try:
        async with asyncio.timeout(scaled(5)):
            await sampler.read.wait()  # each sample reads the CPU time
    finally:
        monitor.stop()
    assert monitor.recent_lag_p99(scaled(10)) is not None


async def test_recent_lag_p99_is_none_without_samples() -> None:
    """Before it starts, or before the first sample, there is no recent lag."""
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler())
    assert monitor.recent_lag_p99(1.0) is None
    monitor.start()
    try:
        assert monitor.recent_lag_p99(1.0) is None
    finally:
        monitor.stop()


async def test_recent_lag_p99_only_looks_at_the_window() -> None:
    """Samples older than the window are left out."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    monitor.start()
    try:
        await wait_for_samples(log, 2)
        assert monitor.recent_lag_p99(scaled(10)) is not None
        assert monitor.recent_lag_p99(-1.0) is None  # a window that ends in the future
    finally:
        monitor.stop()


async def test_mark_reads_the_loop_clock_and_cpu() -> None:
    """A mark holds the loop's time and the sampler's CPU seconds, started or not."""
    loop = asyncio.get_running_loop()
    sampler = FakeSampler(cpu=3.25)
    monitor = ProberMonitor(interval=INTERVAL, sampler=sampler)
    before = loop.time()
    mark = monitor.mark()
    assert before <= mark.time <= loop.time()
    assert mark.cpu_seconds == 3.25


async def test_report_over_a_long_window() -> None:
    """Over a window of at least MIN_CPU_WINDOW, CPU share is CPU seconds over wall seconds."""
    log = LagLog()
    sampler = FakeSampler(cpu=10.0, rss=123_456)
    monitor = ProberMonitor(interval=INTERVAL, sampler=sampler, on_lag=log)
    loop = asyncio.get_running_loop()
    since = Mark(loop.time() - 2.0, cpu_seconds=9.0)
    monitor.start()
    try:
        await wait_for_samples(log, 3)
    finally:
        monitor.stop()
    until = Mark(since.time + 2.0 + scaled(10), cpu_seconds=9.0 + 1.0 + scaled(10) / 2)
    report = monitor.report(since, until)
    assert report.cpu_window == pytest.approx(2.0 + scaled(10))
    assert report.cpu_percent == pytest.approx(100.0 * (1.0 + scaled(10) / 2) / (2.0 + scaled(10)))
    assert report.rss_bytes == 123_456
    assert report.loop_lag_p99 is not None
    assert report.loop_lag_max is not None
    assert report.loop_lag_max == pytest.approx(max(log.lags))


async def test_report_leaves_out_lags_outside_the_marks() -> None:
    """Lag samples taken before ``since`` or after ``until`` are not in the report."""
    log = LagLog()
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(), on_lag=log)
    loop = asyncio.get_running_loop()
    monitor.start()
    try:
        await wait_for_samples(log, 2)
    finally:
        monitor.stop()
    now = loop.time()
    report = monitor.report(Mark(now - 10.0, 0.0), Mark(now - 9.0, 0.5))
    assert report.loop_lag_p99 is None
    assert report.loop_lag_max is None
    assert report.cpu_percent == pytest.approx(50.0)


async def test_short_cpu_window_is_stretched_with_a_later_sample() -> None:
    """A window under MIN_CPU_WINDOW is judged up to the first sample at least that long."""
    log = LagLog()
    sampler = FakeSampler(cpu=0.0)
    monitor = ProberMonitor(interval=INTERVAL, sampler=sampler, on_lag=log)
    loop = asyncio.get_running_loop()
    # A window that began MIN_CPU_WINDOW ago: every sample from now on is late enough.
    since = Mark(loop.time() - MIN_CPU_WINDOW, cpu_seconds=0.0)
    until = Mark(since.time + 0.1, cpu_seconds=0.1)  # 100 % over a tenth of a second
    sampler.cpu = 0.5
    monitor.start()
    try:
        await wait_for_samples(log, 2)
    finally:
        monitor.stop()
    report = monitor.report(since, until)
    assert report.cpu_window >= MIN_CPU_WINDOW
    assert report.cpu_window < MIN_CPU_WINDOW + scaled(5)
    assert report.cpu_percent is not None
    assert report.cpu_percent == pytest.approx(100.0 * 0.5 / report.cpu_window)
    assert report.cpu_percent < 100.0 * 0.5 / MIN_CPU_WINDOW + 1e-9


async def test_short_cpu_window_without_later_sample_stays_short() -> None:
    """Without a sample MIN_CPU_WINDOW after ``since``, the short window is used as it is."""
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler(rss=7))
    since = Mark(100.0, cpu_seconds=2.0)
    until = Mark(100.2, cpu_seconds=2.1)
    report = monitor.report(since, until)
    assert report.cpu_window == pytest.approx(0.2)
    assert report.cpu_percent == pytest.approx(50.0)
    assert report.rss_bytes == 7
    assert report.loop_lag_p99 is None


async def test_empty_window_has_no_cpu_share() -> None:
    """Two marks at the same time give no CPU share rather than a division by zero."""
    monitor = ProberMonitor(interval=INTERVAL, sampler=FakeSampler())
    mark = Mark(50.0, cpu_seconds=1.0)
    report = monitor.report(mark, mark)
    assert report.cpu_percent is None
    assert report.cpu_window == 0.0


async def test_default_sampler_is_the_real_process() -> None:
    """Without a sampler the monitor reads this process's own CPU time and memory."""
    monitor = ProberMonitor(interval=INTERVAL)
    since = monitor.mark()
    until = Mark(since.time + MIN_CPU_WINDOW, since.cpu_seconds + 0.25)
    report = monitor.report(since, until)
    assert report.cpu_percent is not None
    assert report.cpu_percent == pytest.approx(25.0)
    assert report.rss_bytes > 1_000_000


def test_psutil_sampler_reports_sane_numbers() -> None:
    """The real sampler's CPU seconds grow with work and RSS is a plausible size."""
    sampler = PsutilSampler()
    first = sampler.cpu_seconds()
    deadline = time.perf_counter() + 0.02
    while time.perf_counter() < deadline:  # burn a little CPU
        pass
    second = sampler.cpu_seconds()
    assert 0.0 <= first < second
    assert 1_000_000 < sampler.rss_bytes() < 64 * 1024**3


#: Run in a child process: it takes every file descriptor its lowered limit allows.
_EXHAUSTED_FDS_CHILD = """
import resource, socket, sys
from spikewatch.engine.prober_monitor import PsutilSampler
sampler = PsutilSampler()
before = sampler.rss_bytes()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(socket.socket())
except OSError as exc:
    assert exc.errno == 24, exc
try:
    open("/proc/self/statm").close()
except OSError:
    pass
else:
    sys.exit("the descriptor limit did not bite")
after = sampler.rss_bytes()
assert after == before > 1_000_000, (before, after)
print("ok")
"""


def test_psutil_sampler_survives_descriptor_exhaustion() -> None:
    """With every file descriptor taken (EMFILE), RSS is the last reading, not an OSError."""
    done = subprocess.run(
        [sys.executable, "-c", _EXHAUSTED_FDS_CHILD],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
