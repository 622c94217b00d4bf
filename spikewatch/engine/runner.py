"""One run of one scenario against one target.

The phases, in order (``../shared/spec.md``): baseline → stable (opened) → spike or
ramp → hold → recovery → verdict. The decisions (baseline, recovery, abort, verdict)
are the pure core's; this module only opens connections at the planned times and
hands their timestamps over.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from spikewatch.config import ScenarioConfig, TargetConfig
from spikewatch.core.abort import AbortRule
from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import descriptor_error
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import (
    BaselinePhase,
    ProberHealth,
    RecoveryPhase,
    RunRecord,
    SpikePhase,
    StablePhase,
)
from spikewatch.core.plan import (
    PlannedConnection,
    plan_duration,
    plan_ramp,
    plan_spike,
    shard_plan,
)
from spikewatch.core.recovery import (
    Baseline,
    RecoveryDecision,
    RecoveryTracker,
    decide_baseline,
    good_probe_limit,
    is_good_probe,
)
from spikewatch.core.report import build_run_result
from spikewatch.core.result import RunResult, count_outcomes
from spikewatch.core.saturation import ProberLimits, WorkerShare
from spikewatch.core.verdict import ThresholdLimits
from spikewatch.engine.clock import now as _now
from spikewatch.engine.clock import sleep_until
from spikewatch.engine.connection import ClientConnection, Keepalive, open_connection
from spikewatch.engine.launch import launch
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.selfcheck import Mark, ProberMonitor
from spikewatch.engine.spec import ConnectionSpec, build_connection_spec, resolve
from spikewatch.engine.workers import ANSWER_MARGIN, SpikeOnWorkers, WorkerPool
from spikewatch.errors import SpikewatchError

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]

#: Added to the computed deadline of a run: time to close connections and decide.
_DEADLINE_MARGIN = 30.0

#: A sharded replica that reaches its spike later than this after the shared instant
#: fires at once instead (and says so in the run's timeline).
SHARED_INSTANT_TOLERANCE = 1.0

#: With worker processes the spike starts this long after the daemon decides to fire,
#: so that every worker has its share before the first batch is due.
WORKER_LEAD = 0.05


def _quiet(_: str) -> None:
    """Discard progress messages."""


@dataclass(frozen=True, slots=True)
class Prober:
    """What every run shares: the connection registry, the health monitor, the limits.

    With a ``pool`` (``prober.workers`` > 1) every spike is spread over its processes.
    """

    registry: ConnectionRegistry
    monitor: ProberMonitor
    limits: ProberLimits
    wall_clock: Callable[[], float] = time.time
    pool: WorkerPool | None = None


@dataclass(slots=True)
class RunReport:
    """A finished run: its result, and the raw attempts behind it (for metrics)."""

    result: RunResult
    attempts: list[Attempt] = field(default_factory=list)
    stable_rtts: list[float] = field(default_factory=list)
    stable_dropped: int = 0


def spike_plan(
    scenario: ScenarioConfig, share: tuple[int, int] | None = None
) -> tuple[PlannedConnection, ...]:
    """Return the planned spike (avalanche or ramp), or replica ``share=(index, n)``'s part."""
    if scenario.spike is not None:
        s = scenario.spike
        plan = plan_spike(s.connections, s.batches, s.batch_interval)
    else:
        assert scenario.ramp is not None
        plan = plan_ramp(scenario.ramp.steps, scenario.ramp.step_interval)
    if share is not None and share[1] > 1:
        plan = shard_plan(plan, share[0], share[1])
    return plan


def attempt_bound(target: TargetConfig) -> float:
    """Return the longest one attempt may take until its outcome is decided."""
    one = target.handshake_timeout
    one += target.welcome.timeout if target.welcome else 0.0
    one += target.echo.timeout if target.echo else 0.0
    return one


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
    """The state of one run while it executes; see :func:`execute_run`."""

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
        self.loop = asyncio.get_running_loop()
        # In flight: what is open or running, and what the phases still in progress add to.
        self.spec: ConnectionSpec | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timeline: dict[str, float] = {}
        self.stable_attempts: tuple[Attempt, ...] = ()
        self.stable_conns: list[ClientConnection] = []
        self.stable_rtts: list[float] = []
        self.spike_conns: list[ClientConnection] = []
        self.spike_marks: tuple[Mark, Mark] | None = None
        self.workers: SpikeOnWorkers | None = None
        self._workers_ready: asyncio.Task[None] | None = None
        self._conn_ids = itertools.count()
        self._start = 0.0
        # Each phase's record, set when the phase ends or is cut short.
        self.baseline: BaselinePhase | None = None
        self.spike: SpikePhase | None = None
        self.recovery: RecoveryPhase | None = None

    # -- helpers ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _mark(self, name: str) -> float:
        now = _now()
        self.timeline[name] = now - self._start
        return now

    async def _probe(self, attempt: Attempt, *, until_closed: bool = False) -> Attempt:
        assert self.spec is not None
        conn = await open_connection(self.spec, attempt, self.prober.registry)
        if until_closed and conn is not None:
            # Bounded by the connection's own close timeout, which aborts it.
            await conn.wait_closed()
        return attempt

    def _new_attempt(self, phase: Phase, planned: float | None = None) -> Attempt:
        return Attempt(phase, next(self._conn_ids), planned=planned)

    # -- the run ------------------------------------------------------------------------

    async def execute(self) -> RunReport:
        """Run every phase within the deadline; always close what was opened."""
        wall_start = self.prober.wall_clock()
        self._start = _now()
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
        duration = _now() - self._start
        return self._report(self._record(error, wall_start, duration))

    async def _phases(self) -> None:
        target = self.target
        try:
            address = await resolve(target.host, target.port)
        except OSError as exc:
            # At EMFILE glibc's resolver fails too (EAI_SYSTEM with a stray errno, or
            # "Name or service not known"): the prober's own limit must not read as the
            # target's DNS failing.
            starved = _descriptors_exhausted()
            if starved is not None:
                self._all_baseline_failed(Outcome.ERROR, starved)
            elif isinstance(exc, socket.gaierror):
                self._all_baseline_failed(Outcome.DNS_ERROR, f"cannot resolve {target.host}: {exc}")
            else:
                cause = f"{type(exc).__name__}: {exc}"
                self._all_baseline_failed(Outcome.ERROR, f"cannot resolve {target.host}: {cause}")
            return
        self.spec = build_connection_spec(target, address)
        pool = self.prober.pool
        if pool is not None:
            # The workers get ready while the baseline runs.
            self.workers = SpikeOnWorkers(
                pool, self.id, self.prober.registry, reserve=PROBE_RESERVE
            )
            self._workers_ready = self._spawn(self.workers.prepare(target, address))
        baseline = await self._run_baseline()
        if baseline.target_down:
            return
        if self.scenario.stable is not None:
            await self._open_stable()
        t0 = await self._run_spike()
        await self._run_recovery(t0, baseline)

    def _all_baseline_failed(self, outcome: Outcome, detail: str) -> None:
        now = _now()
        probes = self.scenario.baseline.probes
        attempts = []
        for _ in range(probes):
            attempt = self._new_attempt(Phase.BASELINE)
            attempt.started = attempt.ended = now
            attempt.outcome = outcome
            attempt.detail = detail
            attempts.append(attempt)
        self.baseline = BaselinePhase(tuple(attempts), decide_baseline(probes, []))
        self.progress(f"baseline: {detail}; target down, no spike fired")

    async def _run_baseline(self) -> Baseline:
        cfg = self.scenario.baseline
        self.progress(f"baseline: {cfg.probes} probes every {cfg.interval:g}s")
        start = self._mark("baseline_start")
        attempts: list[Attempt] = []
        # A baseline cut short stands for a target that is down.
        baseline = decide_baseline(cfg.probes, [])
        try:
            tasks = []
            for i in range(cfg.probes):
                await sleep_until(start + i * cfg.interval)
                attempt = self._new_attempt(Phase.BASELINE)
                attempts.append(attempt)
                # Baseline probes finish closing before the spike, so that none of them
                # holds a slot (or the target's attention) when the spike starts.
                tasks.append(self._spawn(self._probe(attempt, until_closed=True)))
            await asyncio.gather(*tasks)
            ok = [a.latency for a in attempts if a.outcome == Outcome.OK]
            latencies = [x for x in ok if x is not None]
            baseline = decide_baseline(cfg.probes, latencies)
        finally:
            self.baseline = BaselinePhase(tuple(attempts), baseline)
        self._mark("baseline_end")
        if baseline.target_down:
            self.progress(f"baseline: {baseline.ok}/{cfg.probes} ok; target down, no spike fired")
        else:
            assert baseline.latency is not None
            self.progress(
                f"baseline: {baseline.ok}/{cfg.probes} ok, B = {baseline.latency * 1000:.2f} ms"
            )
        return baseline

    async def _open_stable(self) -> None:
        cfg = self.scenario.stable
        assert cfg is not None
        assert self.spec is not None
        mode = cfg.mode
        if mode == "auto":
            mode = "echo" if self.target.echo is not None else "ping"
        keepalive = Keepalive(cfg.ping_interval, cfg.timeout, mode, self.stable_rtts.append)
        self._mark("stable_start")

        async def open_one(attempt: Attempt) -> None:
            assert self.spec is not None
            conn = await open_connection(
                self.spec, attempt, self.prober.registry, keepalive=keepalive, reserve=PROBE_RESERVE
            )
            # By outcome, not is_open: a peer that closes in the same read as its welcome
            # has already moved the connection on, and that loss must still be counted.
            if conn is not None and attempt.outcome == Outcome.OK:
                self.stable_conns.append(conn)

        self.stable_attempts = tuple(
            self._new_attempt(Phase.STABLE) for _ in range(cfg.connections)
        )
        await asyncio.gather(*(self._spawn(open_one(a)) for a in self.stable_attempts))
        self._mark("stable_open")
        self.progress(
            f"stable: {len(self.stable_conns)}/{cfg.connections} open, "
            f"{mode} every {cfg.ping_interval:g}s"
        )

    async def _spike_start(self, lead: float = 0.0) -> float:
        """Return the spike's planned start (loop time).

        In one process, wait until a shared instant; with workers (``lead`` > 0) return
        at once: they wait themselves, and an unshared start is ``lead`` from now.
        """
        missed = 0.0 if self.spike_at is None else self.prober.wall_clock() - self.spike_at
        if self.spike_at is not None and missed <= SHARED_INSTANT_TOLERANCE:
            # A sharded run: every replica starts its share at the same wall-clock instant.
            # The plan keeps that instant even when this replica is a little late, so the
            # delay shows as start lateness instead of vanishing.
            spike_start = _now() - missed
            if not lead:
                await sleep_until(spike_start)
            self.timeline["spike_start"] = spike_start - self._start
        else:
            if missed > SHARED_INSTANT_TOLERANCE:
                # Queued behind other runs, or a long baseline: the shared instant is gone.
                # Fire now and say so; lateness would otherwise charge the queue wait to
                # the prober and make every such run "invalid".
                self.timeline["shared_instant_missed_by"] = missed
                self.progress(
                    f"spike: the shared spike instant passed {missed:.1f}s ago; firing now"
                )
            spike_start = _now() + lead
            self.timeline["spike_start"] = spike_start - self._start
        return spike_start

    async def _run_spike(self) -> float:
        assert self.spec is not None
        plan = spike_plan(self.scenario, self.share)
        abort_cfg = self.scenario.abort
        rule = AbortRule(abort_cfg.error_ratio, abort_cfg.min_attempts)
        groups = [list(g) for _, g in itertools.groupby(plan, key=lambda p: p.group)]
        self.progress(
            f"spike: {len(plan)} connections in {len(groups)} "
            f"{'batches' if self.scenario.spike is not None else 'steps'} "
            f"over {plan_duration(plan):g}s"
        )
        attempts: list[Attempt] = []
        abort_reason = ""
        try:
            if self.workers is not None:
                abort_reason = await self._fire_on_workers(plan, rule, attempts)
            else:
                abort_reason = await self._fire_here(groups, rule, attempts)
        finally:
            self.spike = SpikePhase(tuple(attempts), aborted=bool(abort_reason))
        if abort_reason:
            self.progress(f"spike: stopped early, {abort_reason}")
        ended = [a.ended for a in attempts if a.outcome != Outcome.ABORTED]
        t0 = max((e for e in ended if e is not None), default=_now())
        self.timeline["t0"] = t0 - self._start
        summary = count_outcomes(attempts)
        outcomes = ", ".join(f"{n} {o}" for o, n in summary.items())
        spike_start = self._start + self.timeline["spike_start"]
        self.progress(
            f"spike: last attempt finished {t0 - spike_start:.3f}s after start: {outcomes}"
        )
        return t0

    async def _fire_on_workers(
        self, plan: tuple[PlannedConnection, ...], rule: AbortRule, attempts: list[Attempt]
    ) -> str:
        """Fire the spike over the worker processes; return the abort reason, if any."""
        workers, ready = self.workers, self._workers_ready
        assert workers is not None
        assert ready is not None
        await ready
        spike_start = await self._spike_start(lead=WORKER_LEAD)
        start_mark = self.prober.monitor.mark()
        attempts.extend(self._new_attempt(Phase.SPIKE, spike_start + p.offset) for p in plan)
        answer_by = spike_start + plan_duration(plan) + attempt_bound(self.target) + ANSWER_MARGIN
        abort_reason = await workers.fire(attempts, rule, answer_by)
        self.spike_marks = (start_mark, self.prober.monitor.mark())
        return abort_reason

    async def _fire_here(
        self, groups: list[list[PlannedConnection]], rule: AbortRule, attempts: list[Attempt]
    ) -> str:
        """Fire the spike from this event loop; return the abort reason, if any."""
        assert self.spec is not None
        registry = self.prober.registry
        spec = self.spec
        finished = failed = 0
        abort_reason = ""

        async def one(attempt: Attempt) -> None:
            nonlocal finished, failed, abort_reason
            conn = await open_connection(
                spec, attempt, registry, keep_open=True, reserve=PROBE_RESERVE
            )
            if conn is not None and attempt.outcome == Outcome.OK:
                self.spike_conns.append(conn)
            if attempt.outcome == Outcome.ABORTED:
                return
            finished += 1
            if attempt.outcome != Outcome.OK:
                failed += 1
            if not abort_reason and rule.should_abort(finished, failed):
                abort_reason = (
                    f"abort.error_ratio={rule.error_ratio:g} reached: {failed} of {finished} failed"
                )

        spike_start = await self._spike_start()
        start_mark = self.prober.monitor.mark()
        tasks: list[asyncio.Task[None]] = []
        for group in groups:
            planned = spike_start + group[0].offset
            await sleep_until(planned)
            batch = [self._new_attempt(Phase.SPIKE, planned) for _ in group]
            attempts.extend(batch)
            if abort_reason:
                now = _now()
                for attempt in batch:
                    attempt.abort(now, abort_reason)
                continue
            tasks.extend(await launch(batch, one, self._spawn))
        await asyncio.gather(*tasks)
        self.spike_marks = (start_mark, self.prober.monitor.mark())
        return abort_reason

    async def _run_recovery(self, t0: float, baseline: Baseline) -> None:
        cfg = self.scenario.recovery
        assert baseline.latency is not None
        limit = good_probe_limit(baseline.latency, cfg.tolerance, cfg.slack)
        self.progress(
            f"recovery: a probe every {cfg.probe_interval:g}s, good when ≤ {limit * 1000:.2f} ms, "
            f"{cfg.consecutive} in a row, timeout {cfg.timeout:g}s"
        )
        hold = self._spawn(self._hold_then_close(t0 + self.scenario.hold))
        attempts: list[Attempt] = []
        decision: RecoveryDecision | None = None
        try:
            decision = await self._probe_until_decided(t0, limit, attempts)
        finally:
            self.recovery = RecoveryPhase(tuple(attempts), decision, limit, cfg.timeout)
        self._mark("recovery_end")
        if decision.state == "recovered":
            assert decision.seconds is not None
            self.progress(
                f"recovery: recovered after {decision.seconds:.3f}s ({len(attempts)} probes)"
            )
        else:
            self.progress(f"recovery: did not recover within {cfg.timeout:g}s")
        await hold

    async def _probe_until_decided(
        self, t0: float, limit: float, attempts: list[Attempt]
    ) -> RecoveryDecision:
        """Probe every ``probe_interval`` from T0 until recovery is decided."""
        cfg = self.scenario.recovery
        tracker = RecoveryTracker(t0, cfg.consecutive, cfg.timeout)

        async def probe(probe_id: int, attempt: Attempt) -> None:
            await self._probe(attempt)
            ok = attempt.outcome == Outcome.OK
            tracker.probe_finished(probe_id, is_good_probe(ok, attempt.latency, limit))

        tasks = []
        for probe_id in itertools.count():
            slot = t0 + probe_id * cfg.probe_interval
            await sleep_until(slot)
            # Judge the slot itself, as it is what the probe is recorded to start at: not
            # the wake-up, which may be a hair early (a slot on the deadline would start
            # past it) or late (a slot before the deadline would be dropped).
            if not tracker.wants_more_probes(slot):
                break
            # The probe's start is its slot (T0 + k * interval), not when the loop woke:
            # recovery is 0 when the first probe begins the good run (the contract).
            tracker.probe_started(probe_id, slot)
            attempt = self._new_attempt(Phase.RECOVERY, slot)
            attempts.append(attempt)
            tasks.append(self._spawn(probe(probe_id, attempt)))
        await asyncio.gather(*tasks)
        decision = tracker.decision()
        return tracker.close() if decision.state == "pending" else decision

    async def _hold_then_close(self, until: float) -> None:
        await sleep_until(until)
        for conn in self.spike_conns:
            conn.close()
        if self.workers is not None:
            await self.workers.close_held()

    async def _close_everything(self) -> None:
        """Close every connection of the run on every path, cancellation included."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        conns = self.stable_conns + self.spike_conns
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
        stable = None
        if self.scenario.stable is not None and self.stable_attempts:
            stable = StablePhase(
                connections=self.scenario.stable.connections,
                attempts=self.stable_attempts,
                rtts=tuple(self.stable_rtts),
                dropped=sum(1 for c in self.stable_conns if c.lost_at is not None),
                drop_example=next(
                    (c.lost_reason for c in self.stable_conns if c.lost_reason), None
                ),
            )
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
            timeline=dict(self.timeline),
        )

    def _prober_health(self) -> ProberHealth:
        """Return the prober's figures over the spike (its memory only, when none was fired)."""
        monitor = self.prober.monitor
        if self.spike_marks is None:
            now = monitor.mark()
            return ProberHealth(monitor.report(now, now), over_spike=False)
        workers = None
        if self.workers is not None:
            shares = zip(self.workers.health, self.workers.shares, strict=True)
            workers = tuple(WorkerShare(health, tuple(share)) for health, share in shares)
        return ProberHealth(monitor.report(*self.spike_marks), over_spike=True, workers=workers)

    def _report(self, record: RunRecord) -> RunReport:
        result = build_run_result(record, threshold_limits(self.scenario), self.prober.limits)
        message = result.message
        self.progress(f"verdict: {result.result.value}{': ' + message if message else ''}")
        dropped = record.stable.dropped if record.stable is not None else 0
        return RunReport(result, list(record.attempts()), list(self.stable_rtts), dropped)


def threshold_limits(scenario: ScenarioConfig) -> ThresholdLimits:
    """Return the scenario's thresholds as the core checks them."""
    t = scenario.thresholds
    return ThresholdLimits(
        success_ratio=t.success_ratio,
        handshake_p95=t.handshake_p95,
        first_message_p95=t.first_message_p95,
        message_rtt_p95=t.message_rtt_p95,
        recovery=t.recovery,
        dropped_stable=t.dropped_stable,
    )


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
