"""Tests for spikewatch.core.saturation."""

from __future__ import annotations

import errno

from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import descriptor_error
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.saturation import (
    MIN_CPU_WINDOW,
    ProberLimits,
    WorkerShare,
    descriptor_starvation,
    judge_one_process,
    judge_prober,
    saturation_reasons,
)
from tests.core.fakes import Health

LIMITS = ProberLimits(max_loop_lag_p99=0.1, max_start_lateness_p99=0.25, max_cpu_percent=95.0)


CALM = Health(0.001, 10.0, 2.0, 1000)


def test_within_every_limit_is_not_saturated() -> None:
    """Figures at or under every limit give no reason."""
    assert (
        saturation_reasons(LIMITS, loop_lag_p99=0.1, start_lateness_p99=0.25, cpu_percent=95.0)
        == ()
    )


def test_unmeasured_figures_are_ignored() -> None:
    """None for a figure means not measured, never saturated."""
    assert (
        saturation_reasons(LIMITS, loop_lag_p99=None, start_lateness_p99=None, cpu_percent=None)
        == ()
    )


def test_loop_lag_past_its_limit() -> None:
    """Loop lag above its limit alone gives one reason, in milliseconds."""
    reasons = saturation_reasons(
        LIMITS, loop_lag_p99=0.1234, start_lateness_p99=0.0, cpu_percent=10.0
    )
    assert reasons == ("event-loop lag p99 123.4ms > 100ms",)


def test_start_lateness_past_its_limit() -> None:
    """Spike start lateness above its limit alone gives one reason, in milliseconds."""
    reasons = saturation_reasons(
        LIMITS, loop_lag_p99=None, start_lateness_p99=0.3, cpu_percent=None
    )
    assert reasons == ("spike start lateness p99 300.0ms > 250ms",)


def test_cpu_past_its_limit() -> None:
    """CPU above its limit alone gives one reason, as a share of a core."""
    reasons = saturation_reasons(
        LIMITS, loop_lag_p99=0.001, start_lateness_p99=None, cpu_percent=99.6
    )
    assert reasons == ("prober CPU 100% > 95% of a core",)


def test_all_three_past_their_limits_in_order() -> None:
    """With every limit exceeded, all three reasons come: lag, lateness, CPU."""
    reasons = saturation_reasons(
        LIMITS, loop_lag_p99=0.5, start_lateness_p99=1.0, cpu_percent=150.0
    )
    assert reasons == (
        "event-loop lag p99 500.0ms > 100ms",
        "spike start lateness p99 1000.0ms > 250ms",
        "prober CPU 150% > 95% of a core",
    )


def share(lateness: float) -> list[Attempt]:
    return [Attempt(Phase.SPIKE, c, planned=1.0, started=1.0 + lateness) for c in range(3)]


def test_every_process_is_judged_and_the_worst_shows() -> None:
    """One saturated worker makes the run invalid, named, and its figures are reported."""
    busy = Health(0.3, 99.0, 2.0, 2000)
    calm = Health(0.002, 20.0, 2.0, 3000)
    report = judge_prober(
        LIMITS, CALM, [WorkerShare(calm, share(0.0)), WorkerShare(busy, share(0.4))]
    )
    assert report.saturated
    assert report.loop_lag_p99 == 0.3
    assert report.cpu_percent == 99.0
    assert report.rss_bytes == 6000
    assert [r.split(":")[0] for r in report.reasons] == ["worker 1"] * 3
    assert "start lateness p99 400.0ms" in report.reasons[1]


def test_calm_workers_and_unjudged_short_windows_pass() -> None:
    """Calm processes pass; a CPU share over less than a second is shown, not judged."""
    short = Health(0.002, 100.0, 0.2, 10)
    report = judge_prober(LIMITS, CALM, [WorkerShare(short, share(0.0)), WorkerShare(None, [])])
    assert not report.saturated
    assert report.cpu_percent == 100.0


def test_a_worker_without_a_health_report_is_not_hidden() -> None:
    """A worker that fired a share but sent no health is a reason, not a silent pass."""
    report = judge_prober(LIMITS, CALM, [WorkerShare(None, share(0.0))])
    assert report.reasons == ("worker 0: no health report",)
    daemon_busy = Health(0.5, None, 0.0, 10)
    assert judge_prober(LIMITS, daemon_busy, []).reasons[0].startswith("event-loop lag")


def test_without_any_lag_or_cpu_figure_the_report_shows_none() -> None:
    """With no lag or CPU known in any process, the report shows None, not a made-up 0."""
    blank = Health(None, None, 0.0, 7)
    report = judge_prober(LIMITS, blank, [WorkerShare(blank, [])])
    assert (report.saturated, report.loop_lag_p99, report.cpu_percent) == (False, None, None)
    assert report.rss_bytes == 14


def test_one_process_is_judged_on_lag_lateness_and_a_long_enough_cpu_window() -> None:
    """Alone, the daemon is judged on its lag, the spike's lateness and CPU over ≥ 1 s."""
    busy = Health(0.2, 99.0, MIN_CPU_WINDOW, 5000)
    report = judge_one_process(LIMITS, busy, 0.3)
    assert report.saturated
    assert (report.loop_lag_p99, report.cpu_percent, report.rss_bytes) == (0.2, 99.0, 5000)
    assert len(report.reasons) == 3
    brief = Health(0.001, 99.0, MIN_CPU_WINDOW - 0.01, 5000)
    assert judge_one_process(LIMITS, brief, None).reasons == ()


def test_attempts_without_a_file_descriptor_are_counted_as_the_probers() -> None:
    """EMFILE/ENFILE attempts, in any phase, are counted in one reason; none gives None."""
    emfile = descriptor_error(OSError(errno.EMFILE, "Too many open files"))
    assert emfile is not None
    starved = [Attempt(p, n, outcome=Outcome.ERROR, detail=emfile) for n, p in enumerate(Phase)]
    ok = Attempt(Phase.SPIKE, 9, outcome=Outcome.OK)
    reason = descriptor_starvation([*starved, ok])
    assert reason is not None
    assert reason.startswith(f"{len(starved)} attempt(s) found no file descriptor (EMFILE/ENFILE)")
    assert descriptor_starvation([ok]) is None
