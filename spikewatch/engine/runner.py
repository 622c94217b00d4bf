"""One run of one scenario against one target: its phases in their order, then its result.

The phases (``../shared/spec.md``): baseline (:mod:`.probes`) → stable (opened,
:mod:`.stable`) → spike or ramp (:mod:`.spike`) → hold → recovery (:mod:`.probes`) →
verdict. This module sequences them within the run's deadline and closes what they
opened. Each phase's record (:mod:`spikewatch.core.phases`) is taken when the phase ends
or is cut short; the decisions (baseline, recovery, abort, and the result itself,
:func:`~spikewatch.core.report.build_run_result`) are the pure core's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from spikewatch.config import ChurnConfig, ScenarioConfig, TargetConfig
from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import descriptor_error
from spikewatch.core.outcomes import Outcome
from spikewatch.core.phases import (
    BaselinePhase,
    PhaseLag,
    ProberHealth,
    RecoveryPhase,
    RunRecord,
    SpikePhase,
)
from spikewatch.core.plan import (
    PlannedConnection,
    plan_duration,
)
from spikewatch.core.recovery import (
    Baseline,
    decide_baseline,
)
from spikewatch.core.redact import NO_REDACTION, Redactor
from spikewatch.core.report import build_run_result
from spikewatch.core.result import RunResult
from spikewatch.core.saturation import ProberLimits, WorkerShare
from spikewatch.core.version import UNKNOWN, TargetVersion
from spikewatch.engine.churn import ChurnFiring
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection, losses
from spikewatch.engine.inflight import ProgressFn, RunInFlight
from spikewatch.engine.prober_monitor import Mark, ProberMonitor
from spikewatch.engine.probes import BaselineProbes, RecoveryProbes
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec, build_connection_spec, resolve
from spikewatch.engine.spike import SpikeFiring, spike_plan
from spikewatch.engine.spike_on_workers import SpikeOnWorkers
from spikewatch.engine.stable import StableConnections
from spikewatch.engine.version import cancelled_version, read_version_url, version_from_probes
from spikewatch.engine.worker_pool import WorkerPool
from spikewatch.errors import SpikewatchError

__all__ = [
    "Prober",
    "ProgressFn",
    "RunReport",
    "ScenarioRun",
    "attempt_bound",
    "execute_run",
    "redact_record",
    "run_deadline",
    "spike_plan",
]

log = logging.getLogger(__name__)

#: Added to the computed deadline of a run: time to close connections and decide.
_DEADLINE_MARGIN = 30.0


def _quiet(_: str) -> None:
    """Discard progress messages."""


@dataclass(frozen=True, slots=True)
class Prober:
    """What every run shares: the connection registry, the health monitor, the limits.

    With a ``pool`` (``prober.workers`` > 1) every spike is spread over its processes.
    ``redact`` masks secrets in the target's text before a result is built from it.
    """

    registry: ConnectionRegistry
    monitor: ProberMonitor
    limits: ProberLimits
    wall_clock: Callable[[], float] = time.time
    pool: WorkerPool | None = None
    redact: Redactor = NO_REDACTION


@dataclass(slots=True)
class RunReport:
    """A finished run: its result, and the raw attempts behind it (for metrics)."""

    result: RunResult
    attempts: list[Attempt] = field(default_factory=list)
    stable_rtts: list[float] = field(default_factory=list)
    stable_dropped: int = 0


def attempt_bound(target: TargetConfig) -> float:
    """Return the longest one attempt may take until its outcome is decided."""
    return target.handshake_timeout + target.steps_bound


def run_deadline(scenario: ScenarioConfig, target: TargetConfig) -> float:
    """Return the longest a run may take: the configured timeout, or an upper bound."""
    if scenario.timeout is not None:
        return scenario.timeout
    one = attempt_bound(target) + target.close_timeout
    baseline = scenario.baseline.probes * scenario.baseline.interval + one
    stable = one if scenario.stable else 0.0
    spike = plan_duration(spike_plan(scenario)) + one
    recovery = max(scenario.hold, scenario.recovery.timeout + one)
    return baseline + stable + spike + recovery + _DEADLINE_MARGIN


def _descriptors_exhausted() -> str | None:
    """Return why no socket can be made now when it is EMFILE/ENFILE, else None."""
    try:
        socket.socket().close()
    except OSError as exc:
        return descriptor_error(exc)
    return None


class ScenarioRun:
    """One run while it executes: what is in flight, and each finished phase's record."""

    def __init__(
        self,
        target: TargetConfig,
        scenario: ScenarioConfig,
        prober: Prober,
        *,
        progress: ProgressFn | None = None,
        run_id: str | None = None,
        share: tuple[int, int] | None = None,
        spike_at: float | None = None,
    ) -> None:
        self.target = target
        self.share = share
        self.spike_at = spike_at
        self.scenario = scenario
        self.prober = prober
        self.progress = progress or _quiet
        self.id = run_id or uuid.uuid4().hex[:16]
        # In flight: what is open or running, and what the phases still in progress add to.
        self.run = RunInFlight(self.progress)
        self.spec: ConnectionSpec | None = None
        self.stable: StableConnections | None = None
        self.firing: SpikeFiring | None = None
        self.workers: SpikeOnWorkers | None = None
        self._workers_ready: asyncio.Task[None] | None = None
        # Each phase's record, set when the phase ends or is cut short.
        self.baseline: BaselinePhase | None = None
        self.spike: SpikePhase | None = None
        self.recovery: RecoveryPhase | None = None
        #: The monitor's marks around the phases besides the spike that measure the target.
        self._windows: list[tuple[str, Mark, Mark]] = []
        #: What says the target's version: the baseline probes, or a GET of its URL.
        self._probe_conns: list[ClientConnection] = []
        self._version_read: asyncio.Task[TargetVersion] | None = None

    @property
    def spike_marks(self) -> tuple[Mark, Mark] | None:
        """The monitor's marks around the spike, once it was fired."""
        return self.firing.marks if self.firing is not None else None

    @property
    def spike_conns(self) -> list[ClientConnection]:
        """The spike's connections this process holds open until T0 + hold."""
        return self.firing.held if self.firing is not None else []

    # -- the run ------------------------------------------------------------------------

    async def execute(self) -> RunReport:
        """Run every phase within the deadline; always close what was opened."""
        wall_start = self.prober.wall_clock()
        start = self.run.begin()
        deadline = run_deadline(self.scenario, self.target)
        if self.spike_at is not None:
            # A sharded run waits for the shared spike instant; that wait is not overrun.
            deadline += max(0.0, self.spike_at - wall_start)
        monitor = self.prober.monitor
        monitor.start()
        error: str | None = None
        try:
            async with asyncio.timeout(deadline):
                await self._phases()
        except TimeoutError:
            error = f"run exceeded its deadline of {deadline:g}s"
        except SpikewatchError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("run %s of %s/%s failed", self.id, self.target.name, self.scenario.name)
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            await self._close_everything()
            monitor.stop()
        if error is None and self.workers is not None and self.workers.failures:
            # The prober lost part of its own spike: the figures do not describe the target.
            error = "; ".join(self.workers.failures)
        duration = _now() - start
        return self._report(self._record(error, wall_start, duration))

    async def _phases(self) -> None:
        version = self.target.version
        if version is not None and version.url is not None:
            # Read beside the baseline; bounded by its own timeout, awaited at the end.
            self._version_read = self.run.spawn(read_version_url(version))
        await self._measure()
        if self._version_read is not None:
            await asyncio.wait([self._version_read])

    async def _measure(self) -> None:
        target = self.target
        try:
            address = await resolve(target.host, target.port)
        except OSError as exc:
            # At EMFILE glibc's resolver fails too (EAI_SYSTEM with a stray errno, or
            # "Name or service not known"): the prober's own limit must not read as the
            # target's DNS failing.
            starved = _descriptors_exhausted()
            probes = BaselineProbes(self.run, self.scenario.baseline)
            if starved is not None:
                probes.all_failed(Outcome.ERROR, starved)
            elif isinstance(exc, socket.gaierror):
                probes.all_failed(Outcome.DNS_ERROR, f"cannot resolve {target.host}: {exc}")
            else:
                cause = f"{type(exc).__name__}: {exc}"
                probes.all_failed(Outcome.ERROR, f"cannot resolve {target.host}: {cause}")
            self.baseline = probes.record()
            return
        self.spec = build_connection_spec(target, address)
        pool = self.prober.pool
        if pool is not None:
            # The workers get ready while the baseline runs.
            self.workers = SpikeOnWorkers(
                pool, self.id, self.prober.registry, reserve=PROBE_RESERVE
            )
            self._workers_ready = self.run.spawn(self.workers.prepare(target, address))
        baseline = await self._run_baseline()
        if baseline.target_down:
            return
        if self.scenario.stable is not None:
            echo = target.keepalive is not None or target.echo is not None
            self.stable = StableConnections(self.run, self.scenario.stable, echo=echo)
            await self.stable.open(self.spec, self.prober.registry)
        t0 = await self._run_spike()
        await self._run_recovery(t0, baseline)

    async def _run_baseline(self) -> Baseline:
        assert self.spec is not None
        probes = BaselineProbes(self.run, self.scenario.baseline)
        since = self.prober.monitor.mark()
        try:
            return await probes.run_probes(self.spec, self.prober.registry)
        finally:
            self.baseline = probes.record()
            self._probe_conns = probes.conns
            self._windows.append(("baseline", since, self.prober.monitor.mark()))

    async def _run_spike(self) -> float:
        assert self.spec is not None
        plan = spike_plan(self.scenario, self.share)
        abort_cfg = self.scenario.abort
        rule = AbortRule(abort_cfg.error_ratio, abort_cfg.min_attempts)
        churn = self.scenario.churn
        if churn is not None:
            return await self._run_churn(churn, plan, rule)
        groups = sum(1 for _ in itertools.groupby(plan, key=lambda p: p.group))
        self.progress(
            f"spike: {len(plan)} connections in {groups} "
            f"{'batches' if self.scenario.spike is not None else 'steps'} "
            f"over {plan_duration(plan):g}s"
        )
        prober = self.prober
        firing = self.firing = SpikeFiring(
            self.run, prober.monitor, prober.wall_clock, self.spike_at
        )
        abort_reason = ""
        try:
            if self.workers is not None:
                assert self._workers_ready is not None
                await self._workers_ready
                bound = attempt_bound(self.target)
                abort_reason = await firing.on_workers(self.workers, plan, rule, bound)
            else:
                abort_reason = await firing.here(self.spec, prober.registry, plan, rule)
        finally:
            self.spike = SpikePhase(tuple(firing.attempts), aborted=bool(abort_reason))
        if abort_reason:
            self.progress(f"spike: stopped early, {abort_reason}")
        return firing.t0()

    async def _run_churn(
        self, churn: ChurnConfig, plan: tuple[PlannedConnection, ...], rule: AbortRule
    ) -> float:
        """Fire a churn, here or over the worker processes; return T0."""
        assert self.spec is not None
        replicas = self.share[1] if self.share is not None else 1
        rate = churn.rate / replicas
        self.progress(
            f"churn: {len(plan)} connections at {rate:g}/s over {churn.duration:g}s, "
            "each closing after its cycle"
        )
        prober = self.prober
        firing = ChurnFiring(
            self.run,
            prober.monitor,
            prober.wall_clock,
            self.spike_at,
            rate=rate,
            duration=churn.duration,
            max_in_flight=churn.max_in_flight,
        )
        self.firing = firing
        abort_reason = ""
        try:
            if self.workers is not None:
                assert self._workers_ready is not None
                await self._workers_ready
                # A worker reports its share once every connection of it is closed.
                bound = attempt_bound(self.target) + self.target.close_timeout
                abort_reason = await firing.on_workers(self.workers, plan, rule, bound)
            else:
                abort_reason = await firing.churn(self.spec, prober.registry, plan, rule)
        finally:
            self.spike = SpikePhase(
                tuple(firing.attempts), aborted=bool(abort_reason), churn=firing.plan_record()
            )
        if abort_reason:
            self.progress(f"churn: stopped early, {abort_reason}")
        return firing.t0()

    async def _run_recovery(self, t0: float, baseline: Baseline) -> None:
        assert self.spec is not None
        assert baseline.latency is not None
        probes = RecoveryProbes(self.run, self.scenario.recovery, t0, baseline.latency)
        hold = self.run.spawn(self._hold_then_close(t0 + self.scenario.hold))
        since = self.prober.monitor.mark()
        try:
            await probes.run_probes(self.spec, self.prober.registry)
        finally:
            self.recovery = probes.record()
            self._windows.append(("recovery", since, self.prober.monitor.mark()))
        await hold

    async def _hold_then_close(self, until: float) -> None:
        await sleep_until(until)
        # Count what the target dropped during the hold before our own closes (issue 13:
        # a proxy's idle timeout closing every held connection went unreported).
        dropped, example, to_prober = losses(self.spike_conns)
        for conn in self.spike_conns:
            conn.close()
        if self.workers is not None:
            theirs = await self.workers.close_held()
            dropped += theirs.dropped
            example = example or theirs.example
            to_prober += theirs.to_prober
        if (dropped or to_prober) and self.spike is not None:
            self.spike = dataclasses.replace(
                self.spike,
                held_dropped=dropped,
                held_drop_example=example,
                held_lost_to_prober=to_prober,
            )

    async def _close_everything(self) -> None:
        """Close every connection of the run on every path, cancellation included."""
        for task in list(self.run.tasks):
            task.cancel()
        if self.run.tasks:
            await asyncio.gather(*self.run.tasks, return_exceptions=True)
        # Every connection the run opened, probes still closing included (issue 12).
        conns = (self.stable.conns if self.stable else []) + self.spike_conns + self.run.owned
        for conn in conns:
            conn.close()
        if conns:
            waits = asyncio.gather(*(c.wait_closed() for c in conns))
            try:
                async with asyncio.timeout(self.target.close_timeout + 1.0):
                    await waits
            except TimeoutError:
                for conn in conns:
                    conn.abort()
        if self.workers is not None:
            await self.workers.finish()
            self._report_workers(self.workers)

    def _report_workers(self, workers: SpikeOnWorkers) -> None:
        parts = []
        for number, health in enumerate(workers.health):
            if health is None:
                parts.append(f"{number}: no report")
                continue
            lag = "-" if health.loop_lag_p99 is None else f"{health.loop_lag_p99 * 1000:.1f}ms"
            cpu = "-" if health.cpu_percent is None else f"{health.cpu_percent:.0f}%"
            parts.append(f"{number}: loop lag p99 {lag}, CPU {cpu}")
        self.progress("workers: " + "; ".join(parts))

    # -- the result ---------------------------------------------------------------------

    def _record(self, error: str | None, wall_start: float, duration: float) -> RunRecord:
        """Return what the run recorded, once every connection is closed."""
        probes = self.scenario.baseline.probes
        stable = self.stable.record() if self.stable and self.stable.attempts else None
        return RunRecord(
            id=self.id,
            target=self.target.name,
            scenario=self.scenario.name,
            started_at=wall_start,
            duration=duration,
            baseline=self.baseline or BaselinePhase((), decide_baseline(probes, [])),
            stable=stable,
            spike=self.spike,
            recovery=self.recovery,
            prober=self._prober_health(),
            error=error,
            timeline=dict(self.run.timeline),
            origin=self.run.start,
            version=self._version(),
        )

    def _version(self) -> TargetVersion | None:
        """Return the target's version as this run read it; None when none is configured."""
        config = self.target.version
        if config is None:
            return None
        if config.url is None:
            return version_from_probes(config, self._probe_conns)
        task = self._version_read
        if task is None or not task.done() or task.cancelled():
            return cancelled_version(config)
        exc = task.exception()
        if exc is not None:
            return TargetVersion(UNKNOWN, f"{config.source}: {type(exc).__name__}")
        return task.result()

    def _prober_health(self) -> ProberHealth:
        """Return the prober's figures over the spike (its memory only, when none was fired)."""
        monitor = self.prober.monitor
        phases = tuple(
            PhaseLag(name, monitor.report(since, until).loop_lag_p99)
            for name, since, until in self._windows
        )
        if self.spike_marks is None:
            now = monitor.mark()
            return ProberHealth(monitor.report(now, now), over_spike=False, phases=phases)
        workers = None
        if self.workers is not None:
            shares = zip(self.workers.health, self.workers.shares, strict=True)
            workers = tuple(WorkerShare(health, tuple(share)) for health, share in shares)
        return ProberHealth(
            monitor.report(*self.spike_marks), over_spike=True, workers=workers, phases=phases
        )

    def _report(self, record: RunRecord) -> RunReport:
        record = redact_record(record, self.prober.redact)
        result = build_run_result(record, self.scenario.thresholds.limits(), self.prober.limits)
        message = result.message
        self.progress(f"verdict: {result.result.value}{': ' + message if message else ''}")
        dropped = record.stable.dropped if record.stable is not None else 0
        rtts = list(self.stable.rtts) if self.stable else []
        return RunReport(result, list(record.attempts()), rtts, dropped)


def redact_record(record: RunRecord, redact: Redactor) -> RunRecord:
    """Return ``record`` with secrets masked in every text that came from the target.

    The attempts' details are masked in place (the metrics read the same objects); the
    stable connections' lost reason and the run's error are replaced.
    """
    for attempt in record.attempts():
        attempt.detail = redact(attempt.detail)
    stable = record.stable
    if stable is not None and stable.drop_example is not None:
        stable = replace(stable, drop_example=redact(stable.drop_example))
    spike = record.spike
    if spike is not None and spike.held_drop_example is not None:
        spike = replace(spike, held_drop_example=redact(spike.held_drop_example))
    error = redact(record.error) if record.error is not None else None
    version = record.version
    if version is not None and redact(version.value) != version.value:
        version = TargetVersion(UNKNOWN, "the version read holds a secret; not recorded")
    return replace(record, stable=stable, spike=spike, error=error, version=version)


async def execute_run(
    target: TargetConfig,
    scenario: ScenarioConfig,
    prober: Prober,
    *,
    progress: ProgressFn | None = None,
    run_id: str | None = None,
    share: tuple[int, int] | None = None,
    spike_at: float | None = None,
) -> RunReport:
    """Run ``scenario`` against ``target`` once and return what was measured.

    ``share=(index, replicas)`` fires only that replica's part of the spike; ``spike_at``
    (epoch seconds) starts the spike at that wall-clock instant instead of right after
    the baseline.
    """
    run = ScenarioRun(
        target, scenario, prober, progress=progress, run_id=run_id, share=share, spike_at=spike_at
    )
    return await run.execute()
