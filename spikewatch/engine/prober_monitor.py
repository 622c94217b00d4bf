"""Watch the prober's own health: event-loop lag, CPU time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil

from spikewatch.core.saturation import MIN_CPU_WINDOW
from spikewatch.core.stats import percentile
from spikewatch.engine.clock import now as _now


class ProcessSampler(Protocol):
    """Where CPU time and memory of this process come from."""

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds used so far."""

    def rss_bytes(self) -> int:
        """Resident memory now."""


class PsutilSampler:
    """The real process: CPU from the process clock, memory through psutil.

    Neither reading ever raises: a run's report must not be lost to the sampler.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._rss = 0
        self.rss_bytes()

    def cpu_seconds(self) -> float:
        # CLOCK_PROCESS_CPUTIME_ID: nanosecond resolution, where psutil's cpu_times()
        # counts 10 ms ticks and turns a short window into 0 % or 300 %.
        return time.process_time()

    def rss_bytes(self) -> int:
        """Resident memory now, or at the last reading that succeeded."""
        # psutil opens /proc/<pid>/statm for each reading: with every descriptor taken
        # (EMFILE: another run's spike past RLIMIT_NOFILE) that open fails, and the run
        # whose report asked would end without a result.
        with contextlib.suppress(OSError):
            self._rss = int(self._process.memory_info().rss)
        return self._rss


@dataclass(frozen=True, slots=True)
class Mark:
    """A point in time to measure a window from."""

    time: float
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class WindowReport:
    """The prober's health over one window."""

    loop_lag_p99: float | None
    loop_lag_max: float | None
    cpu_percent: float | None
    rss_bytes: int
    cpu_window: float = 0.0


class ProberMonitor:
    """Sample event-loop lag continuously; report lag, CPU and RSS over any window.

    Lag is how late a timer callback runs: while the loop is busy with connections,
    the sample comes late, which is exactly the delay every measured timestamp suffers.
    Each sample also notes the process's CPU time, so that CPU share can be read over
    any window after the fact.

    Samples come every ``interval`` while an active user (a run, a worker's share) has
    started the monitor, and every ``idle_interval`` while only background users (the
    daemon between runs) have: each sample wakes the process, and on a VM a wake-up
    costs ~0.1 ms of CPU, so 50 samples a second were most of an idle daemon's CPU.
    A stall longer than ``idle_interval`` is still always seen (it delays the sample due
    within it); shorter ones at rest only in proportion.
    """

    def __init__(
        self,
        *,
        interval: float,
        idle_interval: float | None = None,
        sampler: ProcessSampler | None = None,
        on_lag: Callable[[float], None] | None = None,
        capacity: int = 65_536,
    ) -> None:
        self.set_intervals(interval, idle_interval)
        self._sampler = sampler or PsutilSampler()
        self._on_lag = on_lag
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=capacity)
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._expected = 0.0
        self._users = 0
        self._active = 0

    def set_intervals(self, interval: float, idle_interval: float | None = None) -> None:
        """Change the cadences (a config reload); the next sample is scheduled with them."""
        self._interval = interval
        self._idle_interval = max(interval, idle_interval) if idle_interval else interval

    @property
    def sampling_interval(self) -> float:
        """The interval between samples now: fast while an active user is there."""
        return self._interval if self._active else self._idle_interval

    @property
    def next_sample_at(self) -> float | None:
        """When the next sample is due (monotonic seconds); None while nobody samples."""
        return self._expected if self._handle is not None else None

    def start(self, *, background: bool = False) -> None:
        """Begin sampling (counted, so nested users can share one monitor).

        A ``background`` user (the daemon, for its lag histogram and saturation watch)
        is content with the idle cadence; any other user gets the fast one at once.
        """
        self._users += 1
        if not background:
            self._active += 1
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._schedule(_now())
        elif self._active == 1 and not background and self._idle_interval > self._interval:
            # The next sample is at the idle cadence, up to idle_interval away: the run
            # that starts now wants its first one within interval.
            self._handle.cancel()
            self._schedule(_now())

    def stop(self, *, background: bool = False) -> None:
        """Stop a user; stop sampling once the last one has stopped."""
        self._users = max(0, self._users - 1)
        if not background:
            self._active = max(0, self._active - 1)
        if self._users == 0 and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._expected = now + self.sampling_interval
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        # _now(), not loop.time(): uvloop's counts whole milliseconds, too coarse for
        # the lag this is here to see.
        now = _now()
        lag = max(0.0, now - self._expected)
        self._samples.append((now, lag, self._sampler.cpu_seconds()))
        if self._on_lag is not None:
            self._on_lag(lag)
        self._schedule(now)

    def recent_lag_p99(self, window: float) -> float | None:
        """Return the lag p99 over the last ``window`` seconds (None without samples)."""
        if self._loop is None:
            return None
        since = _now() - window
        lags = sorted(lag for t, lag, _ in self._samples if t >= since)
        return percentile(lags, 0.99) if lags else None

    def mark(self) -> Mark:
        """Return a mark for the start of a window."""
        return Mark(_now(), self._sampler.cpu_seconds())

    def report(self, since: Mark, until: Mark) -> WindowReport:
        """Report lag, CPU share of one core and RSS between two marks.

        A CPU window shorter than :data:`MIN_CPU_WINDOW` is stretched to it with the
        samples taken since, when there are any.
        """
        lags = sorted(lag for t, lag, _ in self._samples if since.time <= t <= until.time)
        end_time, end_cpu = until.time, until.cpu_seconds
        if end_time - since.time < MIN_CPU_WINDOW:
            later = next(
                ((t, c) for t, _, c in self._samples if t >= since.time + MIN_CPU_WINDOW), None
            )
            if later is not None:
                end_time, end_cpu = later
        wall = end_time - since.time
        cpu = None
        if wall > 0:
            cpu = 100.0 * (end_cpu - since.cpu_seconds) / wall
        return WindowReport(
            loop_lag_p99=percentile(lags, 0.99) if lags else None,
            loop_lag_max=lags[-1] if lags else None,
            cpu_percent=cpu,
            rss_bytes=self._sampler.rss_bytes(),
            cpu_window=wall,
        )
