"""The Prometheus metrics of the contract (``spec.md``, "Metrics"), in a registry the app owns.

Over 500 lines on purpose: every metric family is defined in one ``__init__`` so that the
contract's table maps onto one place, and the pairs' series, their pre-creation, their
removal on reload and their cached rendering share that one registry's locking; split,
each part would reach into the others' families.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from spikewatch.config.model import ScenarioConfig
from spikewatch.core.outcomes import (
    UPGRADE_STATUS_CODES,
    Outcome,
    Phase,
    RunResultKind,
    status_code_label,
)
from spikewatch.core.verdict import Measurements, evaluate_thresholds
from spikewatch.core.version import UNKNOWN
from spikewatch.heap import release_free_heap

if TYPE_CHECKING:
    from spikewatch.config.model import SpikewatchConfig
    from spikewatch.engine.runner import RunReport

PREFIX = "spikewatch"

# What threshold_names hands the verdict (spikewatch.core.verdict.evaluate_thresholds):
# only the names of its checks are read, the implicit "recovered" among them.
_NOTHING_MEASURED = Measurements(
    success_ratio=None,
    handshake_p95=None,
    first_message_p95=None,
    message_rtt_p95=None,
    recovered=False,
    recovery_seconds=None,
    dropped_stable=0,
)

# Buckets, in seconds, chosen per metric so that both a healthy target and a badly
# degraded one land inside the finite buckets (a histogram_quantile() that falls in +Inf
# only says "more than the last bucket"):
# - a handshake is TCP (+ TLS) + the HTTP upgrade: ~1 ms on a LAN, up to handshake_timeout
#   (5 s by default, 30 s at most in practice) when the target is drowning;
# - the welcome and an echo round trip can be sub-millisecond on a local target, so they
#   start at 0.5 ms; they end at 30 s like the handshake (their timeouts are of that order);
# - recovery spans 0 (recovered at the first probe) to recovery.timeout (120 s by default;
#   10 min allowed for slow autoscalers);
# - a run is seconds (baseline + spike + recovery) to an hour for long ramps;
# - spike start lateness and event-loop lag are the prober's own health: 0.1 ms is
#   normal jitter, 100 ms is the default saturation limit, 5 s is a frozen loop.
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MESSAGE_BUCKETS = (0.0005, *HANDSHAKE_BUCKETS)
RECOVERY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
RUN_DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
PROBER_LAG_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)

#: Why a scheduled run was not started (the ``reason`` label of ``runs_skipped_total``):
#: the pair was still queued or running, the run queue was full, or the scheduler woke
#: up too late for the due time.
SkipReason = Literal["overlap", "queue_full", "missed"]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)

#: Results whose figures describe the target. ``invalid`` (the prober was saturated) and
#: ``error`` (spikewatch itself failed) say nothing about it; ``target_down`` has no spike.
DESCRIBES_TARGET = frozenset({RunResultKind.PASSED, RunResultKind.FAILED, RunResultKind.ABORTED})

_PAIR = ("target", "scenario")
_NAN = math.nan


def _value(x: float | None) -> float:
    """Return ``x``, or NaN (unknown) for None."""
    return _NAN if x is None else x


#: The last line of an OpenMetrics exposition.
_EOF = b"# EOF\n"


class _Union(Collector):
    """Every metric of several registries, as one collector."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self._registries = registries

    def describe(self) -> list[Metric]:
        return []  # the registries below check their own names

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


class SpikewatchMetrics:
    """Every metric of the contract, recorded from run reports, in its own registry.

    Series of a target/scenario pair exist from :meth:`ensure_pairs` on (counters and
    histograms at 0), so that dashboards and alerts see zeros rather than gaps. Before a
    pair's first run its gauges read:

    - ``last_run_timestamp_seconds`` 0 (never: a "no run for too long" alert fires for a
      pair that never completes a run; pair it with ``process_start_time_seconds`` to
      allow the first interval after a start);
    - ``next_run_timestamp_seconds`` NaN until :meth:`set_next_run` gives a time (and NaN
      again when it is given None: not scheduled);
    - ``last_run_success``, ``baseline_latency_seconds``, ``last_spike_success_ratio``,
      ``last_recovery_seconds`` NaN (unknown; NaN compares false, so no alert fires on it).

    Recording a run (:meth:`record_run`):

    - every run: ``runs_total{result}``, ``connections_total`` for each finished attempt,
      ``upgrade_status_total`` for each ``http_status`` attempt, the handshake, first
      message and round-trip histograms by phase (the stable connections' keepalive round
      trips under ``phase="stable"``), spike start lateness, ``run_duration_seconds``,
      ``stable_connections_dropped_total``, ``last_run_timestamp_seconds`` (when it ended)
      and ``last_run_success`` (1 when passed, else 0, as the contract says: ``invalid``
      runs read 0 too, so alert on ``runs_total{result="failed"}`` for the target's
      failures);
    - only runs whose figures describe the target (``passed``, ``failed``, ``aborted``;
      not ``invalid``, ``error`` nor ``target_down``): ``baseline_latency_seconds`` (B),
      ``last_spike_success_ratio``, ``last_recovery_seconds`` (+Inf when it did not
      recover, NaN when recovery was not measured), ``recovery_duration_seconds`` (runs
      that recovered) and ``threshold_failures_total`` (an invalid run's missed
      thresholds are the prober's, and "such runs never count as the target's failure").

    Beyond the contract's table, ``runs_skipped_total{target, scenario, reason}`` counts
    scheduled runs that were not started (``reason`` in :data:`SKIP_REASONS`), and
    ``event_loop_tasks`` how many tasks the daemon's event loop holds (read at scrape time).

    A value the run could not measure (B of no successful probe, the ratio of an empty
    spike) sets its gauge to NaN rather than leaving the previous run's figure. Label
    values come only from the config and the contract's fixed sets.
    """

    def __init__(self, *, version: str, registry: CollectorRegistry | None = None) -> None:
        #: Every metric (what tests and callers read). It is the union of two registries:
        #: the pairs' series, which change only when a run is recorded, a run skipped or
        #: the config reloaded, and are rendered once per change (see :meth:`render`);
        #: and the live ones, read at every scrape.
        self.registry = CollectorRegistry() if registry is None else registry
        self._pair_registry = CollectorRegistry(auto_describe=False)
        self._live_registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Union(self._pair_registry, self._live_registry))
        #: Bumped by every change to the pairs' series; the rendered cache keys on it.
        self._pairs_version = 0
        self._rendered: dict[str, tuple[int, bytes]] = {}
        #: One thread renders, one body at a time: concurrent scrapes of a stale cache
        #: wait for the same rendering instead of each starting one.
        self._render_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        reg = self._pair_registry
        live = self._live_registry
        ProcessCollector(registry=live)
        PlatformCollector(registry=live)
        GCCollector(registry=live)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, _PAIR + labels, namespace=PREFIX, registry=reg)

        def histogram(
            name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
        ) -> Histogram:
            return Histogram(
                name, doc, _PAIR + labels, namespace=PREFIX, registry=reg, buckets=buckets
            )

        def gauge(
            name: str,
            doc: str,
            labels: tuple[str, ...] = _PAIR,
            registry: CollectorRegistry = reg,
        ) -> Gauge:
            return Gauge(name, doc, labels, namespace=PREFIX, registry=registry)

        # Counters are declared without ``_total``; prometheus-client exposes them with it.
        self.runs = counter("runs", "Runs finished, by result.", ("result",))
        self.connections = counter(
            "connections", "Connection attempts, by phase and outcome.", ("phase", "outcome")
        )
        self.upgrade_status = counter(
            "upgrade_status", "Upgrade answers other than 101, by status code.", ("code",)
        )
        self.handshake = histogram(
            "handshake_duration_seconds",
            "Connect start to upgrade complete.",
            HANDSHAKE_BUCKETS,
            ("phase",),
        )
        self.first_message = histogram(
            "first_message_duration_seconds",
            "Upgrade complete to welcome received.",
            MESSAGE_BUCKETS,
            ("phase",),
        )
        self.message_rtt = histogram(
            "message_rtt_seconds", "Echo sent to echo received.", MESSAGE_BUCKETS, ("phase",)
        )
        self.recovery_duration = histogram(
            "recovery_duration_seconds",
            "Recovery times of the runs that recovered.",
            RECOVERY_BUCKETS,
        )
        self.last_recovery = gauge(
            "last_recovery_seconds", "Last run's recovery time; +Inf when it did not recover."
        )
        self.baseline_latency = gauge("baseline_latency_seconds", "Last run's baseline latency B.")
        self.last_spike_success_ratio = gauge(
            "last_spike_success_ratio", "ok / attempted in the last spike."
        )
        self.last_run_success = gauge("last_run_success", "1 when the last run passed, else 0.")
        self.last_run_timestamp = gauge(
            "last_run_timestamp_seconds", "When the last run ended (Unix time)."
        )
        # Live: set from the scheduler at every scrape.
        self.next_run_timestamp = gauge(
            "next_run_timestamp_seconds", "When the next run is due (Unix time).", _PAIR, live
        )
        self.stable_dropped = counter(
            "stable_connections_dropped", "Stable connections lost during runs."
        )
        self.threshold_failures = counter(
            "threshold_failures", "Thresholds missed, by threshold.", ("threshold",)
        )
        # Beyond the contract's table: without it a pair whose runs keep overlapping (or a
        # full queue) would only show as a stale last_run_timestamp_seconds.
        self.runs_skipped = counter(
            "runs_skipped", "Scheduled runs not started, by reason.", ("reason",)
        )
        self.run_duration = histogram(
            "run_duration_seconds", "Run wall time.", RUN_DURATION_BUCKETS
        )
        self.spike_start_lateness = histogram(
            "spike_start_lateness_seconds",
            "Actual minus planned start of each spike connection.",
            PROBER_LAG_BUCKETS,
        )
        self.open_connections = gauge("open_connections", "Connections open now.", (), live)
        self.event_loop_lag = Histogram(
            "event_loop_lag_seconds",
            "Sampled event-loop lag of the prober.",
            namespace=PREFIX,
            registry=live,
            buckets=PROBER_LAG_BUCKETS,
        )
        self.prober_saturated = gauge(
            "prober_saturated", "1 while the prober is past its own limits.", (), live
        )
        self.config_last_reload_successful = gauge(
            "config_last_reload_successful",
            "1 when the last config (re)load succeeded.",
            (),
            live,
        )
        self.config_last_reload_success_timestamp = gauge(
            "config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (Unix time).",
            (),
            live,
        )
        # Beyond the contract's table: a task that outlives its run is a leak that RSS shows
        # only much later (bench/soak.py watches this gauge across hundreds of runs).
        self.event_loop_tasks = gauge(
            "event_loop_tasks", "Tasks not yet done on the daemon's event loop.", (), live
        )
        self.event_loop_tasks.set_function(running_loop_tasks)
        self.build_info = gauge("build_info", "The running spikewatch version.", ("version",), live)
        self.build_info.labels(version).set(1)

        # Issue 17: one info series per target, its current version, so that PromQL can
        # join a pair's figures to the version that produced them without a label per run.
        self.target_info = gauge(
            "target_info", "1, labelled with the target's current version.", ("target", "version")
        )
        self.target_version_change = gauge(
            "target_version_change_timestamp_seconds",
            "When the target's current version was first seen (Unix time).",
            ("target",),
        )
        #: Each target's version in ``target_info``.
        self._versions: dict[str, str] = {}

        #: The pairs that have series, with the threshold names each has series for.
        self._pairs: dict[tuple[str, str], set[str]] = {}

    # -- the pairs of the config ----------------------------------------------------------

    @staticmethod
    def threshold_names(scenario: ScenarioConfig) -> list[str]:
        """Return the scenario's configured thresholds, in the contract's order, + recovered.

        Asked of the verdict itself: these are the checks, in their order, that every
        result of the scenario's runs will carry, whatever order the config lists them in.
        """
        checks = evaluate_thresholds(scenario.thresholds.limits(), _NOTHING_MEASURED)
        return [check.name for check in checks]

    @classmethod
    def config_pairs(cls, config: SpikewatchConfig) -> list[tuple[str, str, list[str]]]:
        """Return every pair of ``config`` with its threshold names, for :meth:`ensure_pairs`."""
        return [(t.name, s.name, cls.threshold_names(s)) for t, s in config.pairs()]

    def ensure_pairs(self, pairs: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """Create every series of each (target, scenario, threshold names) at its initial value.

        A pair that already has series keeps their values (a reload must not reset them);
        new threshold names of a known pair get their series.
        """
        self._pairs_version += 1
        for target, scenario, thresholds in pairs:
            names = set(thresholds)
            known = self._pairs.get((target, scenario))
            if known is None:
                self._init_gauges(target, scenario)
                known = self._pairs[target, scenario] = set()
            known |= names
            for metric, labels in self._series(target, scenario, names):
                metric.labels(*labels)

    def forget_pairs(self, keep: set[tuple[str, str]]) -> None:
        """Remove every series of the pairs not in ``keep`` (gone from the config)."""
        self._pairs_version += 1
        for pair in [p for p in self._pairs if p not in keep]:
            for metric, labels in self._series(*pair, self._pairs.pop(pair)):
                metric.remove(*labels)
        self.keep_versions({target for target, _ in keep})

    def keep_versions(self, targets: set[str]) -> None:
        """Remove the version series of every target not in ``targets`` (gone from the
        config, or no longer with a ``version:``)."""
        self._pairs_version += 1
        for target in [t for t in self._versions if t not in targets]:
            self.target_info.remove(target, self._versions.pop(target))
            self.target_version_change.remove(target)

    def sync_pairs(self, pairs: Iterable[tuple[str, str, Iterable[str]]]) -> None:
        """Make the series match exactly ``pairs`` (after a reload).

        Create what is new, remove the pairs that are gone, and remove the
        ``threshold_failures_total`` series of thresholds a kept pair no longer has.
        """
        wanted = {(t, s): set(names) for t, s, names in pairs}
        self.ensure_pairs((t, s, names) for (t, s), names in wanted.items())
        self.forget_pairs(set(wanted))
        for pair, names in wanted.items():
            known = self._pairs[pair]
            for name in known - names:
                self.threshold_failures.remove(*pair, name)
            known &= names

    def _init_gauges(self, target: str, scenario: str) -> None:
        self.last_recovery.labels(target, scenario).set(_NAN)
        self.baseline_latency.labels(target, scenario).set(_NAN)
        self.last_spike_success_ratio.labels(target, scenario).set(_NAN)
        self.last_run_success.labels(target, scenario).set(_NAN)
        self.last_run_timestamp.labels(target, scenario).set(0)
        self.next_run_timestamp.labels(target, scenario).set(_NAN)

    def _series(
        self, target: str, scenario: str, thresholds: Iterable[str]
    ) -> Iterator[tuple[MetricWrapperBase, tuple[str, ...]]]:
        """Yield (metric, label values) for every series of one pair."""
        pair = (target, scenario)
        for kind in RunResultKind:
            yield self.runs, (*pair, kind.value)
        for phase in Phase:
            for outcome in Outcome:
                yield self.connections, (*pair, phase.value, outcome.value)
            for histogram in (self.handshake, self.first_message, self.message_rtt):
                yield histogram, (*pair, phase.value)
        for code in UPGRADE_STATUS_CODES:
            yield self.upgrade_status, (*pair, code)
        for reason in SKIP_REASONS:
            yield self.runs_skipped, (*pair, reason)
        for name in thresholds:
            yield self.threshold_failures, (*pair, name)
        for metric in (
            self.recovery_duration,
            self.run_duration,
            self.spike_start_lateness,
            self.stable_dropped,
            self.last_recovery,
            self.baseline_latency,
            self.last_spike_success_ratio,
            self.last_run_success,
            self.last_run_timestamp,
            self.next_run_timestamp,
        ):
            yield metric, pair

    # -- runs -----------------------------------------------------------------------------

    def record_run(self, report: RunReport) -> None:
        """Record one finished run (the rules are in the class docstring)."""
        self._pairs_version += 1
        r = report.result
        pair = (r.target, r.scenario)
        self._pairs.setdefault(pair, set()).update(c.name for c in r.thresholds)
        self.runs.labels(*pair, r.result.value).inc()
        for a in report.attempts:
            phase = a.phase.value
            if a.outcome is not None:
                self.connections.labels(*pair, phase, a.outcome.value).inc()
            if a.outcome == Outcome.HTTP_STATUS and a.status is not None:
                self.upgrade_status.labels(*pair, status_code_label(a.status)).inc()
            if a.handshake is not None:
                self.handshake.labels(*pair, phase).observe(a.handshake)
            if a.first_message is not None:
                self.first_message.labels(*pair, phase).observe(a.first_message)
            if a.rtt is not None:
                self.message_rtt.labels(*pair, phase).observe(a.rtt)
            lateness = a.lateness
            if a.phase == Phase.SPIKE and lateness is not None:
                # A timer may fire a hair early (asyncio allows clock resolution); a negative
                # observation would make the _sum series go down, which reads as a reset.
                self.spike_start_lateness.labels(*pair).observe(max(0.0, lateness))
        stable_rtt = self.message_rtt.labels(*pair, Phase.STABLE.value)
        for rtt in report.stable_rtts:
            stable_rtt.observe(rtt)
        self.stable_dropped.labels(*pair).inc(report.stable_dropped)
        self.run_duration.labels(*pair).observe(r.duration)
        self.last_run_timestamp.labels(*pair).set(r.started_at + r.duration)
        self.last_run_success.labels(*pair).set(1 if r.passed else 0)
        if r.target_version is not None:
            self.set_target_version(r.target, r.target_version, r.started_at)
        if r.result not in DESCRIBES_TARGET:
            return
        for check in r.thresholds:
            if not check.passed:
                self.threshold_failures.labels(*pair, check.name).inc()
        self.baseline_latency.labels(*pair).set(_value(r.baseline.latency))
        ratio = r.spike.success_ratio if r.spike is not None else None
        self.last_spike_success_ratio.labels(*pair).set(_value(ratio))
        recovery = r.recovery
        if recovery is None:
            self.last_recovery.labels(*pair).set(_NAN)
        elif not recovery.recovered:
            self.last_recovery.labels(*pair).set(math.inf)
        else:
            self.last_recovery.labels(*pair).set(_value(recovery.seconds))
            if recovery.seconds is not None:
                self.recovery_duration.labels(*pair).observe(recovery.seconds)

    def restore_last_run(self, doc: Mapping[str, Any]) -> None:
        """Set a configured pair's last-run gauges from a stored run's JSON (at a restart).

        The gauges :meth:`record_run` sets, by the same rules; counters and histograms are
        not restored: they restart at zero, as Prometheus expects of a restarted process.
        """
        pair = (str(doc["target"]), str(doc["scenario"]))
        if pair not in self._pairs or doc.get("result") is None:
            return
        self._pairs_version += 1
        result = RunResultKind(doc["result"])
        started = datetime.fromisoformat(doc["started_at"]).timestamp()
        self.last_run_timestamp.labels(*pair).set(started + float(doc["duration_seconds"]))
        self.last_run_success.labels(*pair).set(1 if result == RunResultKind.PASSED else 0)
        if result not in DESCRIBES_TARGET:
            return
        self.baseline_latency.labels(*pair).set(_value(doc["baseline"]["latency_seconds"]))
        spike = doc.get("spike")
        ratio = spike.get("success_ratio") if spike else None
        self.last_spike_success_ratio.labels(*pair).set(_value(ratio))
        recovery = doc.get("recovery")
        if recovery is None:
            self.last_recovery.labels(*pair).set(_NAN)
        elif not recovery["recovered"]:
            self.last_recovery.labels(*pair).set(math.inf)
        else:
            self.last_recovery.labels(*pair).set(_value(recovery["seconds"]))

    def set_target_version(self, target: str, version: str, since: float) -> None:
        """Make ``target_info`` say ``version`` (first seen at ``since``), removing the
        series of the version before; ``unknown`` never replaces a version read before:
        a version URL that failed once is not a deploy."""
        current = self._versions.get(target)
        if version == current or (version == UNKNOWN and current is not None):
            return
        self._pairs_version += 1
        if current is not None:
            self.target_info.remove(target, current)
        self._versions[target] = version
        self.target_info.labels(target, version).set(1)
        self.target_version_change.labels(target).set(since)

    def restore_versions(self, versions: Mapping[str, tuple[str, str]]) -> None:
        """Set each configured target's version series from the stored history (at a start):
        ``versions`` maps a target to its last known version and when it was first seen."""
        configured = {target for target, _ in self._pairs}
        for target, (version, since) in versions.items():
            if target in configured:
                self.set_target_version(target, version, datetime.fromisoformat(since).timestamp())

    # -- the daemon's state ---------------------------------------------------------------

    def count_skipped(self, target: str, scenario: str, reason: SkipReason) -> None:
        """Count one scheduled run of the pair that was not started, and why."""
        self._pairs_version += 1
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {SKIP_REASONS}")
        self.runs_skipped.labels(target, scenario, reason).inc()

    def set_next_run(self, target: str, scenario: str, timestamp: float | None) -> None:
        """Set when the pair runs next (Unix time); None (not scheduled) reads NaN."""
        self.next_run_timestamp.labels(target, scenario).set(_value(timestamp))

    def observe_loop_lag(self, seconds: float) -> None:
        """Record one event-loop lag sample (negative jitter counts as 0)."""
        self.event_loop_lag.observe(max(0.0, seconds))

    def set_prober_saturated(self, saturated: bool) -> None:
        """Say whether the prober is past its own limits now."""
        self.prober_saturated.set(1 if saturated else 0)

    def set_open_connections_source(self, fn: Callable[[], float]) -> None:
        """Read ``open_connections`` from ``fn`` at each scrape."""
        self.open_connections.set_function(fn)

    def set_event_loop_tasks_source(self, fn: Callable[[], float]) -> None:
        """Read ``event_loop_tasks`` from ``fn`` at each scrape (default: the running loop's)."""
        self.event_loop_tasks.set_function(fn)

    def set_reload(self, ok: bool, timestamp: float) -> None:
        """Record a config (re)load; the success timestamp moves only when it succeeded."""
        self.config_last_reload_successful.set(1 if ok else 0)
        if ok:
            self.config_last_reload_success_timestamp.set(timestamp)

    # -- exposition -----------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Return (body, content type): OpenMetrics when ``accept`` asks for it, else text."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def render_off_loop(self, accept: str | None) -> tuple[bytes, str]:
        """Like :meth:`render`, without holding up the event loop for the pairs' series."""
        parts, content_type = await self.render_parts(accept)
        return b"".join(parts), content_type

    async def render_parts(self, accept: str | None) -> tuple[tuple[bytes, bytes], str]:
        """Return the exposition as (the pairs' series, the live ones), and its content type.

        The pairs' series are most of the exposition (about 300 a pair; prometheus-client
        formats one in ~8 µs, so 80 pairs take ~200 ms), yet change only when a run is
        recorded or skipped or the config reloads: they are rendered once per change, in
        a thread, and kept. The live metrics (process, loop lag, open connections, next
        runs) are rendered at every scrape. The two parts are written one after the
        other: joining them would copy megabytes per scrape (2.9 MB at 80 pairs), and
        each copy freed raised the allocator's high-water mark.
        """
        encoder, content_type = choose_encoder(accept or "")
        async with self._render_lock:
            version = self._pairs_version
            cached = self._rendered.get(content_type)
            if cached is not None and cached[0] == version:
                pairs = cached[1]
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="metrics-render")
                loop = asyncio.get_running_loop()
                pairs = await loop.run_in_executor(
                    self._executor, _render_and_trim, encoder, self._pair_registry
                )
                if pairs.endswith(_EOF):  # OpenMetrics: one "# EOF", at the very end
                    pairs = pairs[: -len(_EOF)]
                self._rendered[content_type] = (version, pairs)
        live = encoder(self._live_registry)
        return (pairs, live), content_type

    def close(self) -> None:
        """Stop the rendering thread (the daemon's shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class _OneFamily:
    """A registry of one metric family: what an encoder needs (``collect``)."""

    __slots__ = ("_family",)

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


def _render_and_trim(
    encoder: Callable[[CollectorRegistry], bytes], registry: CollectorRegistry
) -> bytes:
    """Render ``registry`` family by family, then give the freed heap back to the system.

    The encoder builds a string per sample and joins them: for the whole registry at once
    that is ~27,000 strings at 80 pairs, whose memory Python keeps once freed (partly used
    arenas). Family by family, only one family's strings live at a time. Then
    malloc_trim: without it, the idle daemon's RSS rose from 78 to 96 MB over its first
    scrapes and stayed there.
    """
    parts = []
    for family in registry.collect():
        part = encoder(cast("CollectorRegistry", _OneFamily(family)))
        if part.endswith(_EOF):  # OpenMetrics ends each rendering; the body ends once
            part = part[: -len(_EOF)]
        parts.append(part)
    body = b"".join(parts)
    del parts
    release_free_heap()
    return body


def running_loop_tasks() -> float:
    """Return how many tasks of the running event loop are not done; NaN outside a loop.

    The daemon renders its metrics inside the loop (the ``/metrics`` handler), so the
    count includes the handler's own task.
    """
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running loop: rendered from plain code, e.g. a test
        return math.nan
