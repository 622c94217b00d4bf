"""Tests for spikewatch.core.saturation."""

from __future__ import annotations

from spikewatch.core.saturation import ProberLimits, saturation_reasons

LIMITS = ProberLimits(max_loop_lag_p99=0.1, max_start_lateness_p99=0.25, max_cpu_percent=95.0)


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
