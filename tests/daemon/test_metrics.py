"""The metrics of the contract: names, types, labels, pre-created series, recorded runs."""

from __future__ import annotations

import asyncio
import gc
import math
import platform
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from spikewatch import heap
from spikewatch.config import parse_config
from spikewatch.core.attempt import Attempt
from spikewatch.core.outcomes import UPGRADE_STATUS_CODES, Outcome, Phase, RunResultKind
from spikewatch.core.result import (
    BaselineSummary,
    ProberReport,
    RecoverySummary,
    RunResult,
    SpikeSummary,
    count_outcomes,
    group_errors,
)
from spikewatch.core.verdict import ThresholdCheck
from spikewatch.daemon.metrics import SKIP_REASONS, SpikewatchMetrics
from spikewatch.engine.runner import RunReport
from spikewatch.heap import release_free_heap
from tests.daemon.promtool import PACKAGE, check_metrics

#: The contract's "Metrics" table (spec.md), as exposed: name, type, label names.
CONTRACT: tuple[tuple[str, str, frozenset[str]], ...] = tuple(
    (f"spikewatch_{name}", kind, frozenset(labels.split()))
    for name, kind, labels in (
        ("runs_total", "counter", "target scenario result"),
        ("connections_total", "counter", "target scenario phase outcome"),
        ("upgrade_status_total", "counter", "target scenario code"),
        ("handshake_duration_seconds", "histogram", "target scenario phase"),
        ("first_message_duration_seconds", "histogram", "target scenario phase"),
        ("message_rtt_seconds", "histogram", "target scenario phase"),
        ("recovery_duration_seconds", "histogram", "target scenario"),
        ("last_recovery_seconds", "gauge", "target scenario"),
        ("baseline_latency_seconds", "gauge", "target scenario"),
        ("last_spike_success_ratio", "gauge", "target scenario"),
        ("last_run_success", "gauge", "target scenario"),
        ("last_run_timestamp_seconds", "gauge", "target scenario"),
        ("next_run_timestamp_seconds", "gauge", "target scenario"),
        ("stable_connections_dropped_total", "counter", "target scenario"),
        ("threshold_failures_total", "counter", "target scenario threshold"),
        ("run_duration_seconds", "histogram", "target scenario"),
        ("spike_start_lateness_seconds", "histogram", "target scenario"),
        ("open_connections", "gauge", ""),
        ("event_loop_lag_seconds", "histogram", ""),
        ("prober_saturated", "gauge", ""),
        ("config_last_reload_successful", "gauge", ""),
        ("config_last_reload_success_timestamp_seconds", "gauge", ""),
        ("build_info", "gauge", "version"),
    )
)

#: Beyond the table (the contract allows extensions where users need more).
EXTENSIONS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("spikewatch_runs_skipped_total", "counter", frozenset({"target", "scenario", "reason"})),
    ("spikewatch_target_info", "gauge", frozenset({"target", "version"})),
    ("spikewatch_target_version_change_timestamp_seconds", "gauge", frozenset({"target"})),
)

#: Beyond the table too, for diagnosing the daemon itself (bench/soak.py reads them);
#: no dashboard is meant to chart them, so the dashboards' checks leave them out.
DIAGNOSTICS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("spikewatch_event_loop_tasks", "gauge", frozenset()),
)

T, S = "chat", "burst"
PAIR = {"target": T, "scenario": S}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


# --- helpers -----------------------------------------------------------------------------


def make_metrics() -> SpikewatchMetrics:
    metrics = SpikewatchMetrics(version="1.2.3")
    metrics.ensure_pairs([(T, S, ["success_ratio", "recovered"])])
    metrics.set_target_version(T, "1.0.0", 1_700_000_000.0)
    return metrics


def value(metrics: SpikewatchMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"spikewatch_{name}", labels)


def pair_value(metrics: SpikewatchMetrics, name: str, **labels: str) -> float | None:
    return value(metrics, name, **PAIR, **labels)


def text(metrics: SpikewatchMetrics) -> str:
    return metrics.render(None)[0].decode()


def attempt(phase: Phase, outcome: Outcome | None, **fields: Any) -> Attempt:
    return Attempt(phase=phase, conn=0, outcome=outcome, detail=f"{outcome}", **fields)


def ok(phase: Phase, **fields: Any) -> Attempt:
    timings = {"handshake": 0.004, "first_message": 0.001, "rtt": 0.002, "latency": 0.007}
    return attempt(phase, Outcome.OK, **{**timings, **fields})


def report(
    kind: RunResultKind,
    attempts: Sequence[Attempt] = (),
    *,
    target: str = T,
    scenario: str = S,
    baseline_latency: float | None = 0.005,
    recovery: RecoverySummary | None = None,
    thresholds: tuple[ThresholdCheck, ...] = (),
    stable_rtts: Sequence[float] = (),
    stable_dropped: int = 0,
    started_at: float = 1_800_000_000.0,
    duration: float = 12.5,
) -> RunReport:
    """Build a real RunResult (and its RunReport) from hand-made attempts."""
    baseline = [a for a in attempts if a.phase == Phase.BASELINE]
    spike = [a for a in attempts if a.phase == Phase.SPIKE]
    result = RunResult(
        id="run-1",
        target=target,
        scenario=scenario,
        result=kind,
        started_at=started_at,
        duration=duration,
        baseline=BaselineSummary(
            probes=len(baseline),
            ok=sum(a.outcome == Outcome.OK for a in baseline),
            outcomes=count_outcomes(baseline),
            latency=baseline_latency,
        ),
        spike=SpikeSummary.from_attempts(spike, aborted=kind == RunResultKind.ABORTED)
        if spike
        else None,
        stable=None,
        recovery=recovery,
        thresholds=thresholds,
        prober=ProberReport(kind == RunResultKind.INVALID, 0.001, 30.0, 50_000_000),
        errors=group_errors(attempts),
    )
    return RunReport(result, list(attempts), list(stable_rtts), stable_dropped)


def recovered(seconds: float) -> RecoverySummary:
    return RecoverySummary(True, seconds, 5, {"ok": 5}, 0.011, 120.0)


def not_recovered() -> RecoverySummary:
    return RecoverySummary(False, None, 240, {"timeout": 240}, 0.011, 120.0)


def spike_run_attempts() -> list[Attempt]:
    """3 baseline, 2 stable, 6 spike (3 ok, 1 timeout, 2 refused upgrades), 2 recovery."""
    return [
        *(ok(Phase.BASELINE) for _ in range(3)),
        *(ok(Phase.STABLE) for _ in range(2)),
        ok(Phase.SPIKE, planned=10.0, started=10.002),
        ok(Phase.SPIKE, planned=10.0, started=10.001),
        ok(Phase.SPIKE, planned=11.0, started=11.0),
        attempt(Phase.SPIKE, Outcome.TIMEOUT, planned=11.0, started=11.3),
        attempt(Phase.SPIKE, Outcome.HTTP_STATUS, status=503, planned=12.0, started=12.0),
        attempt(Phase.SPIKE, Outcome.HTTP_STATUS, status=418, planned=12.0, started=12.0),
        ok(Phase.RECOVERY),
        attempt(Phase.RECOVERY, Outcome.REFUSED),
    ]


def target_gauges(metrics: SpikewatchMetrics) -> dict[str, float | None]:
    names = ("baseline_latency_seconds", "last_spike_success_ratio", "last_recovery_seconds")
    return {name: pair_value(metrics, name) for name in names}


def same(a: dict[str, float | None], b: dict[str, float | None]) -> bool:
    """Compare gauge readings, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        x == y or (x is not None and y is not None and math.isnan(x) and math.isnan(y))
        for x, y in ((a[k], b[k]) for k in a)
    )


# --- names, types, labels ----------------------------------------------------------------


def test_exposes_every_metric_of_the_contract_with_its_type_and_labels() -> None:
    """Each row of the spec's table is exposed under its exact name, type and label names."""
    body = text(make_metrics())
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.MULTILINE))
    labels: dict[str, set[frozenset[str]]] = defaultdict(set)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels[sample.name].add(frozenset(sample.labels))
    for name, kind, names in CONTRACT + EXTENSIONS + DIAGNOSTICS:
        assert types.get(name) == kind, name
        if kind == "histogram":
            assert labels[f"{name}_bucket"] == {names | {"le"}}, name
            assert labels[f"{name}_count"] == {names}, name
        else:
            assert labels[name] == {names}, name


def test_exposes_no_spikewatch_metric_outside_the_contract() -> None:
    """Beyond the table, extensions and diagnostics, only _created companions carry the prefix."""
    body = text(make_metrics())
    contract = {name for name, _, _ in CONTRACT + EXTENSIONS + DIAGNOSTICS}
    exposed = set(re.findall(r"^# TYPE (spikewatch_\S+) ", body, re.MULTILINE))
    extra = {name for name in exposed - contract if not name.endswith("_created")}
    assert not extra
    for name in exposed - contract:
        base = name.removesuffix("_created")
        assert {base, f"{base}_total"} & contract, name


def test_build_info_is_one_for_the_running_version() -> None:
    """build_info{version} is 1."""
    assert value(make_metrics(), "build_info", version="1.2.3") == 1.0


def test_process_and_python_metrics_stay_on() -> None:
    """The standard process_*, python_info and python_gc_* metrics are in the registry."""
    body = text(make_metrics())
    for name in ("process_start_time_seconds", "python_info", "python_gc_collections_total"):
        assert re.search(rf"^{name}[{{ ]", body, re.MULTILINE), name


def test_owns_its_registry_and_leaves_the_global_one_alone() -> None:
    """Two instances coexist, each in its own registry, and the global REGISTRY stays empty."""
    a, b = make_metrics(), make_metrics()
    assert a.registry is not b.registry
    assert REGISTRY.get_sample_value("spikewatch_build_info", {"version": "1.2.3"}) is None


def test_uses_a_registry_handed_in() -> None:
    """A registry passed in receives the metrics."""
    registry = CollectorRegistry()
    metrics = SpikewatchMetrics(version="9", registry=registry)
    assert metrics.registry is registry
    assert registry.get_sample_value("spikewatch_build_info", {"version": "9"}) == 1.0


# --- series before the first run ---------------------------------------------------------


def test_ensure_pairs_creates_every_counter_series_at_zero() -> None:
    """Every result, phase x outcome, upgrade code and threshold series reads 0 before a run."""
    metrics = make_metrics()
    body = text(metrics)
    assert (
        'spikewatch_connections_total{outcome="timeout",phase="spike",'
        'scenario="burst",target="chat"} 0.0'
    ) in body
    for kind in RunResultKind:
        assert pair_value(metrics, "runs_total", result=kind.value) == 0.0
    for phase in Phase:
        for outcome in Outcome:
            got = pair_value(metrics, "connections_total", phase=phase, outcome=outcome)
            assert got == 0.0, (phase, outcome)
    for code in UPGRADE_STATUS_CODES:
        assert pair_value(metrics, "upgrade_status_total", code=code) == 0.0
    for reason in SKIP_REASONS:
        assert pair_value(metrics, "runs_skipped_total", reason=reason) == 0.0
    for name in ("success_ratio", "recovered"):
        assert pair_value(metrics, "threshold_failures_total", threshold=name) == 0.0
    assert pair_value(metrics, "threshold_failures_total", threshold="recovery") is None
    assert pair_value(metrics, "stable_connections_dropped_total") == 0.0


def test_ensure_pairs_creates_every_histogram_series_empty() -> None:
    """The latency histograms exist per phase, and the per-run ones per pair, with count 0."""
    metrics = make_metrics()
    for name in ("handshake_duration", "first_message_duration", "message_rtt"):
        for phase in Phase:
            assert pair_value(metrics, f"{name}_seconds_count", phase=phase) == 0.0
    for name in ("recovery_duration", "run_duration", "spike_start_lateness"):
        assert pair_value(metrics, f"{name}_seconds_count") == 0.0
        assert pair_value(metrics, f"{name}_seconds_bucket", le="+Inf") == 0.0


def test_gauges_before_the_first_run_read_unknown_or_never() -> None:
    """Target gauges and last_run_success are NaN, last run time 0, next run time NaN."""
    metrics = make_metrics()
    for name in (
        "baseline_latency_seconds",
        "last_spike_success_ratio",
        "last_recovery_seconds",
        "last_run_success",
        "next_run_timestamp_seconds",
    ):
        got = pair_value(metrics, name)
        assert got is not None, name
        assert math.isnan(got), name
    assert pair_value(metrics, "last_run_timestamp_seconds") == 0.0


def test_ensure_pairs_again_keeps_what_was_recorded() -> None:
    """A second ensure_pairs (a reload) resets nothing and adds new threshold series."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(1.0)))
    metrics.set_next_run(T, S, 1_800_000_900.0)
    metrics.ensure_pairs([(T, S, ["recovery", "recovered"])])
    assert pair_value(metrics, "runs_total", result="passed") == 1.0
    assert pair_value(metrics, "last_recovery_seconds") == 1.0
    assert pair_value(metrics, "last_run_success") == 1.0
    assert pair_value(metrics, "next_run_timestamp_seconds") == 1_800_000_900.0
    assert pair_value(metrics, "threshold_failures_total", threshold="recovery") == 0.0
    assert pair_value(metrics, "threshold_failures_total", threshold="success_ratio") == 0.0


def test_threshold_names_are_the_configured_ones_in_order_then_recovered() -> None:
    """threshold_names lists the set thresholds in the spec's order and ends with recovered."""
    config = parse_config(
        {
            "targets": [{"name": "chat", "url": "ws://chat.test/ws"}],
            "scenarios": [
                {
                    "name": "burst",
                    "spike": {"connections": 5},
                    "stable": {"connections": 2},
                    "thresholds": {"dropped_stable": 0, "recovery": "60s", "success_ratio": 0.99},
                },
                {"name": "plain", "spike": {"connections": 5}},
            ],
        }
    )
    burst, plain = config.scenarios
    assert SpikewatchMetrics.threshold_names(burst) == [
        "success_ratio",
        "recovery",
        "dropped_stable",
        "recovered",
    ]
    assert SpikewatchMetrics.threshold_names(plain) == ["recovered"]
    assert SpikewatchMetrics.config_pairs(config) == [
        ("chat", "burst", ["success_ratio", "recovery", "dropped_stable", "recovered"]),
        ("chat", "plain", ["recovered"]),
    ]


# --- recording runs ----------------------------------------------------------------------


def test_record_run_counts_runs_attempts_and_upgrade_codes() -> None:
    """Each attempt counts once under its phase and outcome; non-101 codes map to the fixed set."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts()))
    assert pair_value(metrics, "runs_total", result="failed") == 1.0
    assert pair_value(metrics, "runs_total", result="passed") == 0.0
    expected = {
        ("baseline", "ok"): 3,
        ("stable", "ok"): 2,
        ("spike", "ok"): 3,
        ("spike", "timeout"): 1,
        ("spike", "http_status"): 2,
        ("recovery", "ok"): 1,
        ("recovery", "refused"): 1,
    }
    for phase in Phase:
        for outcome in Outcome:
            got = pair_value(metrics, "connections_total", phase=phase, outcome=outcome)
            assert got == expected.get((phase, outcome), 0), (phase, outcome)
    codes = {
        code: pair_value(metrics, "upgrade_status_total", code=code)
        for code in UPGRADE_STATUS_CODES
    }
    assert codes == {
        code: 1.0 if code in ("503", "other") else 0.0 for code in UPGRADE_STATUS_CODES
    }
    assert 'code="418"' not in text(metrics)


def test_record_run_observes_timings_per_phase() -> None:
    """Handshake, welcome and echo timings land in their phase; stable keepalives under stable."""
    metrics = make_metrics()
    metrics.record_run(
        report(RunResultKind.FAILED, spike_run_attempts(), stable_rtts=[0.01, 0.02, 0.03])
    )
    counts = {"baseline": 3, "stable": 2, "spike": 3, "recovery": 1}
    for phase, n in counts.items():
        assert pair_value(metrics, "handshake_duration_seconds_count", phase=phase) == n
        assert pair_value(metrics, "first_message_duration_seconds_count", phase=phase) == n
        rtts = n + 3 if phase == "stable" else n
        assert pair_value(metrics, "message_rtt_seconds_count", phase=phase) == rtts
    assert pair_value(metrics, "handshake_duration_seconds_sum", phase="spike") == pytest.approx(
        0.012
    )
    stable_sum = pair_value(metrics, "message_rtt_seconds_sum", phase="stable")
    assert stable_sum == pytest.approx(2 * 0.002 + 0.06)
    bucket = pair_value(metrics, "handshake_duration_seconds_bucket", phase="spike", le="0.005")
    assert bucket == 3.0


def test_record_run_observes_spike_start_lateness_and_run_duration() -> None:
    """Each spike attempt's lateness is observed once; the run's wall time once."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts(), duration=42.0))
    assert pair_value(metrics, "spike_start_lateness_seconds_count") == 6.0
    assert pair_value(metrics, "spike_start_lateness_seconds_sum") == pytest.approx(0.303)
    assert pair_value(metrics, "spike_start_lateness_seconds_bucket", le="0.0025") == 5.0
    assert pair_value(metrics, "run_duration_seconds_count") == 1.0
    assert pair_value(metrics, "run_duration_seconds_sum") == 42.0
    assert pair_value(metrics, "run_duration_seconds_bucket", le="30.0") == 0.0


def test_early_spike_start_counts_as_zero_lateness() -> None:
    """A timer that fires a hair early is observed as 0, so the _sum never goes down."""
    metrics = make_metrics()
    early = ok(Phase.SPIKE, planned=10.0, started=9.9995)
    metrics.record_run(report(RunResultKind.PASSED, [early], recovery=recovered(0.0)))
    assert pair_value(metrics, "spike_start_lateness_seconds_count") == 1.0
    assert pair_value(metrics, "spike_start_lateness_seconds_sum") == 0.0


def test_unfinished_and_unplanned_attempts_add_no_outcome_or_lateness() -> None:
    """An attempt without an outcome, or without planned/started times, is not counted there."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.ERROR, [attempt(Phase.SPIKE, None)]))
    assert all(
        pair_value(metrics, "connections_total", phase="spike", outcome=o) == 0.0 for o in Outcome
    )
    assert pair_value(metrics, "spike_start_lateness_seconds_count") == 0.0


def test_failed_run_that_did_not_recover_sets_infinite_recovery_and_counts_misses() -> None:
    """A failed run sets the target gauges, last_recovery +Inf, and counts each missed check."""
    metrics = make_metrics()
    checks = (
        ThresholdCheck("success_ratio", 0.99, 0.5, passed=False),
        ThresholdCheck("recovered", 1.0, 0.0, passed=False),
    )
    run = report(
        RunResultKind.FAILED,
        spike_run_attempts(),
        baseline_latency=0.0042,
        recovery=not_recovered(),
        thresholds=checks,
        stable_dropped=2,
        started_at=1_800_000_000.0,
        duration=12.5,
    )
    metrics.record_run(run)
    assert pair_value(metrics, "last_recovery_seconds") == math.inf
    assert pair_value(metrics, "recovery_duration_seconds_count") == 0.0
    assert pair_value(metrics, "baseline_latency_seconds") == 0.0042
    assert pair_value(metrics, "last_spike_success_ratio") == 0.5
    assert pair_value(metrics, "last_run_success") == 0.0
    assert pair_value(metrics, "last_run_timestamp_seconds") == 1_800_000_012.5
    assert pair_value(metrics, "stable_connections_dropped_total") == 2.0
    assert pair_value(metrics, "threshold_failures_total", threshold="success_ratio") == 1.0
    assert pair_value(metrics, "threshold_failures_total", threshold="recovered") == 1.0
    assert "+Inf" in text(metrics)


def test_passed_run_records_its_recovery_time() -> None:
    """A run that recovered sets last_recovery to its time and observes it once."""
    metrics = make_metrics()
    checks = (ThresholdCheck("recovered", 1.0, 1.0, passed=True),)
    metrics.record_run(
        report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(1.5), thresholds=checks)
    )
    assert pair_value(metrics, "last_recovery_seconds") == 1.5
    assert pair_value(metrics, "recovery_duration_seconds_count") == 1.0
    assert pair_value(metrics, "recovery_duration_seconds_sum") == 1.5
    assert pair_value(metrics, "recovery_duration_seconds_bucket", le="1.0") == 0.0
    assert pair_value(metrics, "recovery_duration_seconds_bucket", le="2.5") == 1.0
    assert pair_value(metrics, "last_run_success") == 1.0
    assert pair_value(metrics, "last_spike_success_ratio") == 1.0
    assert pair_value(metrics, "threshold_failures_total", threshold="recovered") == 0.0


def test_aborted_run_describes_the_target() -> None:
    """An aborted spike still sets the target gauges: the target failed too much."""
    metrics = make_metrics()
    spike = [attempt(Phase.SPIKE, Outcome.REFUSED), attempt(Phase.SPIKE, Outcome.ABORTED)]
    metrics.record_run(report(RunResultKind.ABORTED, spike, recovery=recovered(3.0)))
    assert pair_value(metrics, "last_spike_success_ratio") == 0.0
    assert pair_value(metrics, "last_recovery_seconds") == 3.0
    assert pair_value(metrics, "baseline_latency_seconds") == 0.005
    assert pair_value(metrics, "last_run_success") == 0.0


@pytest.mark.parametrize(
    "kind", [RunResultKind.INVALID, RunResultKind.ERROR, RunResultKind.TARGET_DOWN]
)
def test_runs_that_do_not_describe_the_target_leave_its_gauges(kind: RunResultKind) -> None:
    """invalid, error and target_down runs touch neither target gauges nor threshold misses."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(2.0)))
    before = target_gauges(metrics)
    checks = (ThresholdCheck("recovered", 1.0, 0.0, passed=False),)
    run = report(
        kind,
        spike_run_attempts(),
        baseline_latency=0.5,
        recovery=not_recovered(),
        thresholds=checks,
        started_at=1_900_000_000.0,
        duration=10.0,
    )
    metrics.record_run(run)
    assert same(target_gauges(metrics), before)
    assert pair_value(metrics, "recovery_duration_seconds_count") == 1.0
    assert pair_value(metrics, "threshold_failures_total", threshold="recovered") == 0.0
    assert pair_value(metrics, "runs_total", result=kind.value) == 1.0
    assert pair_value(metrics, "last_run_success") == 0.0
    assert pair_value(metrics, "last_run_timestamp_seconds") == 1_900_000_010.0
    assert pair_value(metrics, "connections_total", phase="spike", outcome="ok") == 4.0


def test_invalid_first_run_leaves_the_target_gauges_unknown() -> None:
    """Before any run that describes the target, an invalid one leaves its gauges NaN."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.INVALID, spike_run_attempts()))
    assert all(v is not None and math.isnan(v) for v in target_gauges(metrics).values())


def test_unmeasured_figures_read_nan_rather_than_the_previous_run() -> None:
    """No B, no spike, no recovery, or a recovery without a time: the gauges read NaN."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(2.0)))
    metrics.record_run(report(RunResultKind.FAILED, [], baseline_latency=None))
    assert all(v is not None and math.isnan(v) for v in target_gauges(metrics).values())
    timeless = RecoverySummary(True, None, 3, {"ok": 3}, 0.011, 120.0)
    metrics.record_run(report(RunResultKind.FAILED, [ok(Phase.SPIKE)], recovery=timeless))
    last = pair_value(metrics, "last_recovery_seconds")
    assert last is not None
    assert math.isnan(last)
    assert pair_value(metrics, "recovery_duration_seconds_count") == 1.0


def test_record_run_of_an_unknown_pair_creates_its_series() -> None:
    """A run of a pair never ensured is still recorded (present from its first run)."""
    metrics = SpikewatchMetrics(version="1")
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], target="other"))
    assert value(metrics, "runs_total", target="other", scenario=S, result="passed") == 1.0


# --- the daemon's state ------------------------------------------------------------------


def test_skipped_runs_are_counted_by_reason() -> None:
    """count_skipped adds one under its reason and leaves the others at 0."""
    metrics = make_metrics()
    metrics.count_skipped(T, S, "overlap")
    metrics.count_skipped(T, S, "overlap")
    metrics.count_skipped(T, S, "missed")
    got = {r: pair_value(metrics, "runs_skipped_total", reason=r) for r in SKIP_REASONS}
    assert got == {"overlap": 2.0, "queue_full": 0.0, "missed": 1.0}


def test_skip_reason_outside_the_fixed_set_is_refused() -> None:
    """A reason outside SKIP_REASONS raises instead of minting a label value."""
    metrics = make_metrics()
    with pytest.raises(ValueError, match="unknown skip reason"):
        metrics.count_skipped(T, S, "because")  # type: ignore[arg-type]
    assert 'reason="because"' not in text(metrics)


def test_next_run_is_the_given_time_or_nan_when_unscheduled() -> None:
    """set_next_run sets the Unix time, and NaN for None."""
    metrics = make_metrics()
    metrics.set_next_run(T, S, 1_800_000_600.0)
    assert pair_value(metrics, "next_run_timestamp_seconds") == 1_800_000_600.0
    metrics.set_next_run(T, S, None)
    got = pair_value(metrics, "next_run_timestamp_seconds")
    assert got is not None
    assert math.isnan(got)


def test_loop_lag_samples_are_observed_with_negative_jitter_as_zero() -> None:
    """observe_loop_lag adds one sample each; a negative one counts as 0."""
    metrics = make_metrics()
    metrics.observe_loop_lag(0.002)
    metrics.observe_loop_lag(-0.0001)
    assert value(metrics, "event_loop_lag_seconds_count") == 2.0
    assert value(metrics, "event_loop_lag_seconds_sum") == pytest.approx(0.002)
    assert value(metrics, "event_loop_lag_seconds_bucket", le="0.0001") == 1.0


def test_prober_saturated_follows_what_it_is_told() -> None:
    """set_prober_saturated sets 1 or 0."""
    metrics = make_metrics()
    assert value(metrics, "prober_saturated") == 0.0
    metrics.set_prober_saturated(True)
    assert value(metrics, "prober_saturated") == 1.0
    metrics.set_prober_saturated(False)
    assert value(metrics, "prober_saturated") == 0.0


def test_open_connections_are_read_from_the_source_at_each_scrape() -> None:
    """open_connections calls the source at scrape time."""
    metrics = make_metrics()
    assert value(metrics, "open_connections") == 0.0
    open_now = [3]
    metrics.set_open_connections_source(lambda: open_now[0])
    assert value(metrics, "open_connections") == 3.0
    open_now[0] = 7
    assert value(metrics, "open_connections") == 7.0


async def test_event_loop_tasks_counts_the_running_loops_unfinished_tasks() -> None:
    """event_loop_tasks, read inside the loop, follows tasks as they start and finish."""
    metrics = make_metrics()
    before = value(metrics, "event_loop_tasks")
    assert before is not None
    assert before >= 1  # this test's own task
    release = asyncio.Event()
    tasks = [asyncio.create_task(release.wait()) for _ in range(3)]
    assert value(metrics, "event_loop_tasks") == before + 3
    release.set()
    await asyncio.gather(*tasks)
    assert value(metrics, "event_loop_tasks") == before


def test_event_loop_tasks_outside_a_loop_is_nan_or_the_source_given() -> None:
    """Without a running loop there is nothing to count (NaN); a source handed in wins."""
    metrics = make_metrics()
    tasks = value(metrics, "event_loop_tasks")
    assert tasks is not None
    assert math.isnan(tasks)
    metrics.set_event_loop_tasks_source(lambda: 5)
    assert value(metrics, "event_loop_tasks") == 5.0


def test_reload_success_moves_the_timestamp_and_failure_keeps_it() -> None:
    """A failed reload sets successful 0 and keeps the last success time."""
    metrics = make_metrics()
    metrics.set_reload(True, 1_800_000_000.0)
    assert value(metrics, "config_last_reload_successful") == 1.0
    metrics.set_reload(False, 1_800_000_100.0)
    assert value(metrics, "config_last_reload_successful") == 0.0
    assert value(metrics, "config_last_reload_success_timestamp_seconds") == 1_800_000_000.0


# --- pairs gone from the config ----------------------------------------------------------


def test_forget_pairs_removes_every_series_of_the_pairs_not_kept() -> None:
    """After forget_pairs, no series names a dropped pair; the kept pair is untouched."""
    metrics = make_metrics()
    metrics.ensure_pairs([("gone", S, ["recovered"])])
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts(), target="gone"))
    assert 'target="gone"' in text(metrics)
    metrics.forget_pairs({(T, S)})
    assert 'target="gone"' not in text(metrics)
    assert pair_value(metrics, "runs_total", result="passed") == 0.0
    metrics.ensure_pairs([("gone", S, ["recovered"])])
    assert value(metrics, "runs_total", target="gone", scenario=S, result="failed") == 0.0


def test_sync_pairs_drops_thresholds_no_longer_configured() -> None:
    """sync_pairs adds new pairs, drops gone ones, and drops a kept pair's removed thresholds."""
    metrics = make_metrics()
    metrics.ensure_pairs([("gone", S, ["recovered"])])
    metrics.sync_pairs([(T, S, ["recovered"]), ("new", S, ["recovered"])])
    assert pair_value(metrics, "threshold_failures_total", threshold="success_ratio") is None
    assert pair_value(metrics, "threshold_failures_total", threshold="recovered") == 0.0
    assert value(metrics, "runs_total", target="new", scenario=S, result="passed") == 0.0
    assert 'target="gone"' not in text(metrics)


# --- exposition --------------------------------------------------------------------------


def test_render_gives_openmetrics_when_asked() -> None:
    """An OpenMetrics Accept header gets a valid OpenMetrics body ending in # EOF."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts(), recovery=not_recovered()))
    body, content_type = metrics.render(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    # prometheus-client's OpenMetrics parser has no annotations; it validates strictly.
    parsed = parse_openmetrics(body.decode())  # type: ignore[no-untyped-call]
    families = {f.name: f.type for f in parsed}
    assert families["spikewatch_runs"] == "counter"
    assert families["spikewatch_handshake_duration_seconds"] == "histogram"


@pytest.mark.parametrize("accept", [None, "", "text/plain", "text/html,*/*;q=0.8"])
def test_render_gives_the_classic_text_format_otherwise(accept: str | None) -> None:
    """Without an OpenMetrics Accept header the body is the classic text format."""
    body, content_type = make_metrics().render(accept)
    assert content_type.startswith("text/plain")
    assert b"# EOF" not in body
    assert b"# TYPE spikewatch_runs_total counter\n" in body


def _families(body: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], str]]:
    """Return every spikewatch sample of a text exposition, by family, labels to value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name.startswith("spikewatch_"):
                key = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[key] = repr(sample.value)  # NaN == NaN
    return out


async def test_render_off_loop_gives_what_render_gives() -> None:
    """The cached, threaded rendering holds every series and value of the plain one."""
    metrics = make_metrics()
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts(), recovery=not_recovered()))
    metrics.observe_loop_lag(0.002)
    body, content_type = await metrics.render_off_loop(None)
    assert content_type.startswith("text/plain")
    plain = _families(metrics.render(None)[0])
    off_loop = _families(body)
    assert off_loop.keys() == plain.keys()
    tasks = "spikewatch_event_loop_tasks"  # read at scrape time: one more task inside a loop
    assert {k: v for k, v in off_loop.items() if k != tasks} == {
        k: v for k, v in plain.items() if k != tasks
    }
    assert check_metrics(body) == ""


async def test_render_off_loop_openmetrics_ends_in_one_eof() -> None:
    """The two parts join into one valid OpenMetrics body with a single # EOF at the end."""
    metrics = make_metrics()
    body, _ = await metrics.render_off_loop(OPENMETRICS)
    assert body.endswith(b"# EOF\n")
    assert body.count(b"# EOF") == 1
    parsed = {f.name for f in parse_openmetrics(body.decode())}  # type: ignore[no-untyped-call]
    assert {"spikewatch_runs", "spikewatch_event_loop_lag_seconds"} <= parsed


def count_pair_renders(metrics: SpikewatchMetrics, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Return a list that gets a 1 each time the pairs' series are collected (rendered)."""
    renders: list[int] = []
    collect = metrics._pair_registry.collect

    def counting() -> Iterable[Metric]:
        renders.append(1)
        return collect()

    monkeypatch.setattr(metrics._pair_registry, "collect", counting)
    return renders


async def test_pairs_are_rendered_again_only_after_they_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scrapes between runs reuse the pairs' rendering; a recorded run or skip shows at once."""
    metrics = make_metrics()
    renders = count_pair_renders(metrics, monkeypatch)
    await metrics.render_off_loop(None)
    metrics.observe_loop_lag(0.5)  # live: shows without re-rendering the pairs
    metrics.set_next_run(T, S, 1_900_000_000.0)
    again = _families((await metrics.render_off_loop(None))[0])
    assert again["spikewatch_event_loop_lag_seconds_count"][()] == "1.0"
    assert again["spikewatch_next_run_timestamp_seconds"][tuple(sorted(PAIR.items()))] == (
        "1900000000.0"
    )
    assert renders == [1]
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(0.5)))
    after_run = _families((await metrics.render_off_loop(None))[0])
    assert (
        after_run["spikewatch_runs_total"][tuple(sorted({**PAIR, "result": "passed"}.items()))]
        == "1.0"
    )
    metrics.count_skipped(T, S, "overlap")
    after_skip = _families((await metrics.render_off_loop(None))[0])
    assert (
        after_skip["spikewatch_runs_skipped_total"][
            tuple(sorted({**PAIR, "reason": "overlap"}.items()))
        ]
        == "1.0"
    )
    assert len(renders) == 3
    metrics.sync_pairs([])
    gone = _families((await metrics.render_off_loop(None))[0])
    assert not any(dict(k).get("target") == T for v in gone.values() for k in v)


async def test_concurrent_scrapes_of_a_stale_cache_render_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scrapes that arrive while the pairs are being rendered wait for that one rendering."""
    metrics = make_metrics()
    renders = count_pair_renders(metrics, monkeypatch)
    results = await asyncio.gather(*(metrics.render_off_loop(None) for _ in range(5)))
    assert renders == [1]
    tasks = "spikewatch_event_loop_tasks"
    first = {k: v for k, v in _families(results[0][0]).items() if k != tasks}
    for body, _ in results[1:]:
        assert {k: v for k, v in _families(body).items() if k != tasks} == first
    metrics.close()
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(0.5)))
    await metrics.render_off_loop(None)  # a closed renderer starts a new thread when asked
    assert renders == [1, 1]
    metrics.close()


def test_release_free_heap_works_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    """On glibc the free heap goes back to the system; elsewhere the call does nothing."""
    assert release_free_heap() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setattr(heap, "_MALLOC_TRIM", None)
    assert release_free_heap() is False


def test_freeze_long_lived_takes_what_lives_now_out_of_collections() -> None:
    """Objects alive at the call are frozen: a full collection no longer walks them."""
    before = gc.get_freeze_count()
    try:
        heap.freeze_long_lived()
        assert gc.get_freeze_count() > max(before, 10_000)  # modules alone are thousands
        assert gc.get_count()[0] < 100  # collected first: the young generation is empty
    finally:
        gc.unfreeze()


def test_promtool_finds_nothing_to_lint() -> None:
    """promtool check metrics is clean for two pairs after a few recorded runs."""
    metrics = SpikewatchMetrics(version="1.2.3")
    metrics.ensure_pairs([(T, S, ["success_ratio", "recovered"]), ("echo", S, ["recovered"])])
    checks = (ThresholdCheck("success_ratio", 0.99, 0.5, passed=False),)
    metrics.record_run(report(RunResultKind.FAILED, spike_run_attempts(), thresholds=checks))
    metrics.record_run(report(RunResultKind.PASSED, [ok(Phase.SPIKE)], recovery=recovered(0.5)))
    metrics.record_run(report(RunResultKind.INVALID, spike_run_attempts(), target="echo"))
    metrics.set_next_run("echo", S, None)
    metrics.count_skipped(T, S, "queue_full")
    metrics.observe_loop_lag(0.001)
    metrics.set_reload(True, 1_800_000_000.0)
    assert check_metrics(metrics.render(None)[0]) == ""


def test_promtool_helper_fails_naming_the_package_when_promtool_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without promtool on PATH the lint test fails, naming the package; it never skips."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=f"'{PACKAGE}' package"):
        check_metrics(b"")


def test_promtool_helper_reports_what_promtool_finds() -> None:
    """The lint is not vacuous: a counter without _total is reported."""
    findings = check_metrics(b"# HELP bad_count Bad.\n# TYPE bad_count counter\nbad_count 1\n")
    assert "bad_count" in findings


def last_run_gauges(metrics: SpikewatchMetrics) -> dict[str, float | None]:
    names = ("last_run_success", "last_run_timestamp_seconds")
    return {**target_gauges(metrics), **{name: pair_value(metrics, name) for name in names}}


@pytest.mark.parametrize(
    "run",
    [
        report(RunResultKind.PASSED, spike_run_attempts(), recovery=recovered(1.5)),
        report(RunResultKind.FAILED, spike_run_attempts(), recovery=not_recovered()),
        report(RunResultKind.ABORTED, [], baseline_latency=None),
        report(RunResultKind.INVALID, spike_run_attempts(), recovery=recovered(2.0)),
    ],
    ids=["passed", "failed-not-recovered", "aborted-unmeasured", "invalid"],
)
def test_a_stored_run_restores_the_gauges_its_recording_set(run: RunReport) -> None:
    """restore_last_run of a run's JSON sets the last-run gauges as record_run did; no counter."""
    recorded = make_metrics()
    recorded.record_run(run)
    restored = make_metrics()
    restored.restore_last_run(run.result.as_dict())
    assert same(last_run_gauges(restored), last_run_gauges(recorded))
    assert pair_value(restored, "runs_total", result=run.result.result.value) == 0.0


def test_a_stored_run_without_a_result_or_pair_restores_nothing() -> None:
    """A cancelled run (no result) or one of a pair no longer configured leaves the gauges."""
    metrics = make_metrics()
    before = last_run_gauges(metrics)
    doc = report(RunResultKind.PASSED, [ok(Phase.SPIKE)]).result.as_dict()
    metrics.restore_last_run({**doc, "result": None})
    metrics.restore_last_run({**doc, "target": "gone"})
    assert same(last_run_gauges(metrics), before)
