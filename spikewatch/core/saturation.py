"""Decide whether the prober was past its own limits while it measured."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import out_of_descriptors, out_of_receive_buffer
from spikewatch.core.outcomes import Outcome
from spikewatch.core.result import ProberReport
from spikewatch.core.stats import percentile

#: CPU share is judged over at least this long: over a few milliseconds of a small
#: spike any busy process is "100 %", which says nothing about saturation.
MIN_CPU_WINDOW = 1.0


@dataclass(frozen=True, slots=True)
class ProberLimits:
    """Beyond these, a run's figures describe the prober, not the target."""

    max_loop_lag_p99: float
    max_start_lateness_p99: float
    max_cpu_percent: float


class ProcessHealth(Protocol):
    """One prober process's figures over a window (the daemon's, or one worker's)."""

    @property
    def loop_lag_p99(self) -> float | None:
        """Event-loop lag p99 in seconds, None without samples."""

    @property
    def cpu_percent(self) -> float | None:
        """CPU share of one core over ``cpu_window``, None when unknown."""

    @property
    def cpu_window(self) -> float:
        """How long (seconds) the CPU share was measured over."""

    @property
    def rss_bytes(self) -> int:
        """Resident memory."""


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """One worker process: its health report (None when it sent none) and its share."""

    health: ProcessHealth | None
    attempts: Sequence[Attempt]


def judged_cpu(health: ProcessHealth) -> float | None:
    """Return the CPU share to judge: None over too short a window (see MIN_CPU_WINDOW)."""
    return health.cpu_percent if health.cpu_window >= MIN_CPU_WINDOW else None


def saturation_reasons(
    limits: ProberLimits,
    *,
    loop_lag_p99: float | None,
    start_lateness_p99: float | None,
    cpu_percent: float | None,
) -> tuple[str, ...]:
    """Return why the prober was saturated (empty when it was not)."""
    reasons: list[str] = []
    if loop_lag_p99 is not None and loop_lag_p99 > limits.max_loop_lag_p99:
        reasons.append(
            f"event-loop lag p99 {loop_lag_p99 * 1000:.1f}ms > {limits.max_loop_lag_p99 * 1000:g}ms"
        )
    if start_lateness_p99 is not None and start_lateness_p99 > limits.max_start_lateness_p99:
        reasons.append(
            f"spike start lateness p99 {start_lateness_p99 * 1000:.1f}ms > "
            f"{limits.max_start_lateness_p99 * 1000:g}ms"
        )
    if cpu_percent is not None and cpu_percent > limits.max_cpu_percent:
        reasons.append(f"prober CPU {cpu_percent:.0f}% > {limits.max_cpu_percent:g}% of a core")
    return tuple(reasons)


def judge_one_process(
    limits: ProberLimits, health: ProcessHealth, start_lateness_p99: float | None
) -> ProberReport:
    """Judge a prober that fired the spike from its own event loop."""
    reasons = saturation_reasons(
        limits,
        loop_lag_p99=health.loop_lag_p99,
        start_lateness_p99=start_lateness_p99,
        cpu_percent=judged_cpu(health),
    )
    return ProberReport(
        bool(reasons), health.loop_lag_p99, health.cpu_percent, health.rss_bytes, reasons
    )


def descriptor_starvation(attempts: Iterable[Attempt]) -> str | None:
    """Return why attempts that found no file descriptor make the run invalid, if any did.

    Failures for want of a descriptor are the prober's, whatever phase they hit: the run
    is invalid rather than blaming the target (target_down, no recovery).
    """
    return _starvation(
        attempts,
        out_of_descriptors,
        "found no file descriptor (EMFILE/ENFILE): the prober's own limit, not the "
        "target's; raise ulimit -n or lower the spike",
    )


def receive_starvation(attempts: Iterable[Attempt]) -> str | None:
    """Return why attempts refused by the prober's receive budget make the run invalid."""
    return _starvation(
        attempts,
        out_of_receive_buffer,
        "found the prober's receive buffers full: its own limit "
        "(limits.max_receive_buffer_bytes), not the target's",
    )


def lost_to_prober(stable: int, held: int) -> str | None:
    """Return why stable and held spike connections the prober's receive budget closed
    make the run invalid, if any did: they are not the target's drops, and the figures
    lack them."""
    if not (stable or held):
        return None
    which = " and ".join(
        f"{count} {kind}" for count, kind in ((stable, "stable"), (held, "held spike")) if count
    )
    return (
        f"{which} connection(s) lost to the prober's receive buffers "
        "(limits.max_receive_buffer_bytes): its own limit, not dropped by the target"
    )


def _starvation(
    attempts: Iterable[Attempt], starved_by: Callable[[Outcome | None, str], bool], why: str
) -> str | None:
    starved = sum(1 for a in attempts if starved_by(a.outcome, a.detail))
    return f"{starved} attempt(s) {why}" if starved else None


def _lateness_p99(attempts: Sequence[Attempt]) -> float | None:
    values = sorted(x for x in (a.lateness for a in attempts) if x is not None)
    return percentile(values, 0.99) if values else None


def judge_prober(
    limits: ProberLimits,
    daemon: ProcessHealth,
    workers: Sequence[WorkerShare],
) -> ProberReport:
    """Judge the prober over the daemon and every worker: the worst of them counts.

    Each process is judged alone (its loop lag, its CPU share of one core, the start
    lateness of its own share; the daemon fires none), so that one saturated worker is
    never averaged away nor reported twice; the report shows the worst lag and CPU, and
    the memory of all processes together.
    """
    reasons = list(
        saturation_reasons(
            limits,
            loop_lag_p99=daemon.loop_lag_p99,
            start_lateness_p99=None,
            cpu_percent=judged_cpu(daemon),
        )
    )
    lags = [daemon.loop_lag_p99]
    cpus = [daemon.cpu_percent]
    rss = daemon.rss_bytes
    for number, worker in enumerate(workers):
        health = worker.health
        if health is None:
            if worker.attempts:
                reasons.append(f"worker {number}: no health report")
            continue
        lags.append(health.loop_lag_p99)
        cpus.append(health.cpu_percent)
        rss += health.rss_bytes
        reasons.extend(
            f"worker {number}: {reason}"
            for reason in saturation_reasons(
                limits,
                loop_lag_p99=health.loop_lag_p99,
                start_lateness_p99=_lateness_p99(worker.attempts),
                cpu_percent=judged_cpu(health),
            )
        )
    known_lags = [x for x in lags if x is not None]
    known_cpus = [x for x in cpus if x is not None]
    return ProberReport(
        saturated=bool(reasons),
        loop_lag_p99=max(known_lags) if known_lags else None,
        cpu_percent=max(known_cpus) if known_cpus else None,
        rss_bytes=rss,
        reasons=tuple(reasons),
    )
