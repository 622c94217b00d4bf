"""The daemon's life: ``startup()`` → ``main_loop()`` → ``shutdown()`` (after uvicorn).

It owns everything long-lived: the config in force, the metrics registry, the
connection registry (the one place ``limits.max_connections`` is enforced), the
prober monitor, the run history, the dispatcher and the scheduler; and it is the
:class:`~spikewatch.daemon.state.DaemonState` the HTTP API talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import prometheus_client
from aiohttp import web

from spikewatch import __version__
from spikewatch.config import (
    ScenarioConfig,
    SpikewatchConfig,
    StorageConfig,
    TargetConfig,
    load_config,
)
from spikewatch.config.render import render_effective_config
from spikewatch.daemon.api import create_app
from spikewatch.daemon.dispatch import RunDispatcher
from spikewatch.daemon.history import RunEntry, RunHistory
from spikewatch.daemon.http_guard import GuardedAppRunner, http_limits
from spikewatch.daemon.logs import log_run
from spikewatch.daemon.metrics import SpikewatchMetrics
from spikewatch.daemon.run_store import MEMORY_MAX_RUNS, AsyncRunStore, RunStore, StoreError
from spikewatch.daemon.schedule import RunScheduler
from spikewatch.daemon.sharding import aligned_slot, resolve_shard, spike_delay
from spikewatch.daemon.state import (
    AlreadyQueuedError,
    QueueFullError,
    ScheduledPair,
    UnknownPairError,
)
from spikewatch.engine.eventloop import loop_name
from spikewatch.engine.from_config import (
    connection_registry,
    make_prober,
    prober_monitor,
    worker_pool,
)
from spikewatch.engine.runner import Prober, execute_run
from spikewatch.engine.worker_pool import WorkerPool
from spikewatch.errors import ConfigError, ConfigProblem
from spikewatch.heap import freeze_long_lived

log = logging.getLogger(__name__)

#: How long runs in flight get to close their connections on shutdown.
SHUTDOWN_GRACE = 5.0
#: How often, and over how long a window, the live prober_saturated gauge is judged.
SATURATION_CHECK_EVERY = 1.0
SATURATION_WINDOW = 5.0
#: Runs remembered in memory for the status page (the store keeps more) and the most a
#: page of ``GET /api/v1/runs`` holds.
HISTORY_CAPACITY = 200
#: Why a run accepted but not finished has no result.
STOPPED_REASON = "the daemon stopped before the run finished"


def open_run_store(storage: StorageConfig) -> RunStore:
    """Open the run history; an unusable one is a config problem naming its file.

    Runs that a previous daemon left queued or running (it stopped, or was killed, before
    they finished) are marked cancelled, with the reason. With ``storage.fallback:
    memory`` an unusable one is logged and replaced by a history in memory.
    """
    retention = storage.retention
    try:
        store = RunStore(storage.path, max_runs=retention.max_runs, max_age=retention.max_age)
        for doc in store.cancel_unfinished(STOPPED_REASON):
            log.warning(
                "run %s of %s/%s: %s", doc["id"], doc["target"], doc["scenario"], doc["reason"]
            )
    except StoreError as exc:
        if storage.fallback != "memory":
            raise ConfigError([ConfigProblem("storage.path", str(exc))]) from None
        log.error(  # noqa: TRY400 - the cause is the message; no traceback to show
            "%s; storage.fallback is memory: the run history is kept in memory only"
            " (the last %d runs) and is lost at the next restart",
            exc,
            min(retention.max_runs, MEMORY_MAX_RUNS),
        )
        store = RunStore(None, max_runs=retention.max_runs, max_age=retention.max_age)
    return store


class Daemon:
    """Run every scenario against its targets on schedule and export what it measures."""

    def __init__(
        self,
        config: SpikewatchConfig,
        *,
        config_path: Path | None = None,
        hostname: str | None = None,
    ) -> None:
        self._hostname = hostname or os.environ.get("HOSTNAME") or socket.gethostname()
        self._shard = resolve_shard(config.sharding, self._hostname)
        self._config = config
        self._config_path = config_path
        # The *_created series would double the exposition for no dashboard's benefit.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.metrics = SpikewatchMetrics(version=__version__)
        self.registry = connection_registry(config)
        self.monitor = prober_monitor(config.prober, on_lag=self.metrics.observe_loop_lag)
        #: prober.workers > 1: worker processes that fire the spikes (fixed until restart).
        self.pool: WorkerPool | None = worker_pool(config.prober)
        self._prober = self._make_prober(config)
        self._history = RunHistory(HISTORY_CAPACITY, AsyncRunStore(open_run_store(config.storage)))
        self.dispatcher = RunDispatcher(
            self._execute,
            max_concurrent=config.limits.max_concurrent_runs,
            max_queued=self._max_queued(config),
        )
        self.scheduler = RunScheduler(self._on_due, self._on_missed)
        self._stop = asyncio.Event()
        self._ready = False
        self._ready_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.bound: tuple[str, int] | None = None

    # -- DaemonState --------------------------------------------------------------------

    @property
    def config(self) -> SpikewatchConfig:
        """The config in force now."""
        return self._config

    @property
    def ready(self) -> bool:
        """Config loaded, scheduler up, HTTP serving."""
        return self._ready

    @property
    def history(self) -> RunHistory:
        """Recent runs."""
        return self._history

    def schedules(self) -> list[ScheduledPair]:
        """Every pair with its schedule, next run, state and last result."""
        return [
            ScheduledPair(
                target=t.name,
                scenario=s.name,
                schedule=self.scheduler.schedule_of(t.name, s.name),
                next_run=self.scheduler.next_run(t.name, s.name),
                state=self.dispatcher.state_of((t.name, s.name)),
                last=self._history.last_result(t.name, s.name),
            )
            for t, s in self._config.pairs()
        ]

    def request_run(self, target: str, scenario: str) -> RunEntry:
        """Queue a run of a configured pair now (the API's POST)."""
        self._lookup(target, scenario)
        return self._submit(target, scenario, "api")

    async def reload(self) -> list[ConfigProblem]:
        """Reload the config file; a bad one is rejected and the old one keeps running."""
        if self._config_path is None:
            problem = ConfigProblem("", "this daemon runs an embedded config; nothing to reload")
            self.metrics.set_reload(ok=False, timestamp=time.time())
            return [problem]
        try:
            new = load_config(self._config_path)
            shard = resolve_shard(new.sharding, self._hostname)
        except ConfigError as exc:
            self.metrics.set_reload(ok=False, timestamp=time.time())
            log.error(  # noqa: TRY400 - the problems are the message; a traceback would hide them
                "config reload rejected, the previous config stays in force:\n%s",
                "\n".join(f"  {p}" for p in exc.problems),
            )
            return exc.problems
        if new.server.listen != self._config.server.listen:
            log.warning("server.listen changed; it takes effect at the next restart")
        if new.prober.workers != self._config.prober.workers:
            log.warning("prober.workers changed; it takes effect at the next restart")
        if new.storage != self._config.storage:
            log.warning("storage changed; it takes effect at the next restart")
        self._config = new
        self._shard = shard
        self._apply(new)
        self.metrics.set_reload(ok=True, timestamp=time.time())
        log.info(
            "config reloaded: %d target(s), %d scenario(s)", len(new.targets), len(new.scenarios)
        )
        return []

    def api_token(self) -> str | None:
        """The bearer token for POST endpoints, or None when none is configured."""
        token = self._config.server.api_token
        return token.get_secret_value() if token is not None else None

    async def render_metrics(self, accept: str | None) -> tuple[Sequence[bytes], str]:
        """The exposition, with next-run times read from the scheduler right now."""
        for t, s in self._config.pairs():
            self.metrics.set_next_run(t.name, s.name, self.scheduler.next_run(t.name, s.name))
        return await self.metrics.render_parts(accept)

    # -- runs ---------------------------------------------------------------------------

    @staticmethod
    def _max_queued(config: SpikewatchConfig) -> int:
        # Each pair is queued at most once, so this bound is never the one that bites
        # in normal operation; it caps the queue should the config grow very large.
        return max(16, 2 * len(config.pairs()))

    def _lookup(self, target: str, scenario: str) -> tuple[TargetConfig, ScenarioConfig]:
        for t, s in self._config.pairs():
            if t.name == target and s.name == scenario:
                return t, s
        raise UnknownPairError(f"no scenario {scenario!r} for target {target!r} in the config")

    def _submit(self, target: str, scenario: str, trigger: Literal["schedule", "api"]) -> RunEntry:
        now = time.time()
        entry = RunEntry(uuid.uuid4().hex[:16], target, scenario, trigger, now)
        if trigger == "schedule" and self._config.sharding.enabled:
            entry.slot = aligned_slot(now, self._lookup(target, scenario)[1].schedule)
        self.dispatcher.submit(entry)
        self._history.add(entry)
        return entry

    def _on_due(self, target: str, scenario: str) -> None:
        try:
            self._submit(target, scenario, "schedule")
        except AlreadyQueuedError as exc:
            self.metrics.count_skipped(target, scenario, "overlap")
            log.info("run of %s/%s skipped: %s", target, scenario, exc)
        except QueueFullError as exc:
            self.metrics.count_skipped(target, scenario, "queue_full")
            log.warning("run of %s/%s skipped: %s", target, scenario, exc)

    def _on_missed(self, target: str, scenario: str) -> None:
        self.metrics.count_skipped(target, scenario, "missed")

    async def _execute(self, entry: RunEntry) -> None:
        try:
            target, scenario = self._lookup(entry.target, entry.scenario)
        except UnknownPairError:
            entry.state = "cancelled"
            entry.reason = "its target or scenario left the config"
            log.info("queued run %s dropped: its pair left the config", entry.id)
            await self._history.save(entry)
            return
        entry.started_at = time.time()
        shard = self._shard
        spike_at = None
        if entry.slot is not None:
            spike_at = entry.slot + spike_delay(self._config.sharding, scenario)
        report = await execute_run(
            target,
            scenario,
            self._prober,
            run_id=entry.id,
            share=(shard.index, shard.replicas),
            spike_at=spike_at,
        )
        # Written before it is reported: the API, the log and the metrics see it after.
        doc = report.result.as_dict()
        doc["state"] = "done"
        doc["trigger"] = entry.trigger
        await self._history.save(entry, doc)
        entry.result = report.result
        entry.state = "done"
        log_run(report.result)
        try:
            self._lookup(entry.target, entry.scenario)
        except UnknownPairError:
            # A reload removed the pair while it ran: recording would bring back series
            # (last_run_timestamp among them) that nothing would ever move again.
            log.info("run %s not recorded in metrics: its pair left the config", entry.id)
            return
        self.metrics.record_run(report)

    def _apply(self, config: SpikewatchConfig) -> None:
        pairs = config.pairs()
        self.metrics.sync_pairs(SpikewatchMetrics.config_pairs(config))
        self.metrics.keep_versions({t.name for t in config.targets if t.version is not None})
        self.registry.limit = config.limits.max_connections
        self.registry.receive_budget.limit = config.limits.max_receive_buffer_bytes
        self.dispatcher.max_concurrent = config.limits.max_concurrent_runs
        self.dispatcher.max_queued = self._max_queued(config)
        self.monitor.set_intervals(
            config.prober.lag_sample_interval, config.prober.idle_lag_sample_interval
        )
        if self.pool is not None:
            self.pool.lag_interval = config.prober.lag_sample_interval
        self._prober = self._make_prober(config)
        self.scheduler.aligned = config.sharding.enabled
        self.scheduler.apply((t.name, s.name, s.schedule) for t, s in pairs)

    async def _restore_last_runs(self) -> None:
        # The last-run gauges of each pair from the history a previous daemon left.
        store = self._history.store
        for t, s in self._config.pairs():
            doc = await store.call(store.store.last_finished, t.name, s.name)
            if doc is not None:
                self.metrics.restore_last_run(doc)
        self.metrics.restore_versions(await store.call(store.store.current_versions))

    def _make_prober(self, config: SpikewatchConfig) -> Prober:
        return make_prober(config, registry=self.registry, monitor=self.monitor, pool=self.pool)

    async def _watch_saturation(self) -> None:
        while True:
            await asyncio.sleep(SATURATION_CHECK_EVERY)
            lag = self.monitor.recent_lag_p99(SATURATION_WINDOW)
            limit = self._config.prober.max_loop_lag_p99
            self.metrics.set_prober_saturated(lag is not None and lag > limit)

    # -- life cycle ---------------------------------------------------------------------

    async def startup(self) -> None:
        """Start sampling, the workers, serving HTTP and scheduling; ready at the end."""
        loop = asyncio.get_running_loop()
        # In the background: between runs, at the idle cadence; every run starts it too.
        self.monitor.start(background=True)
        if self.pool is not None:
            # Started now, not at the first spike: a Python process takes a while to start.
            await self.pool.start()
        self.metrics.set_open_connections_source(lambda: float(self.registry.open))
        self.metrics.set_reload(ok=True, timestamp=time.time())
        self._apply(self._config)
        await self._restore_last_runs()
        server = self._config.server
        # aiohttp wants the shutdown timeout on the runner; on the site it is deprecated.
        runner = GuardedAppRunner(create_app(self), http_limits(), shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, server.host, server.port)
        await site.start()
        port = int(runner.addresses[0][1]) if runner.addresses else server.port
        self.bound = (server.host, port)
        self.scheduler.start()
        self._watch = loop.create_task(self._watch_saturation(), name="saturation watch")
        freeze_long_lived()  # what lives from now on is runs' and connections' objects
        self._ready = True
        self._ready_event.set()
        shard = self._shard
        log.info(
            "spikewatch %s listening on http://%s:%d%s, event loop %s",
            __version__,
            server.host,
            port,
            f" (replica {shard.index} of {shard.replicas})" if shard.replicas > 1 else "",
            loop_name(loop),
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", render_effective_config(self.config))

    async def wait_ready(self) -> None:
        """Wait until startup has finished."""
        await self._ready_event.wait()

    async def main_loop(self) -> None:
        """Serve until asked to stop."""
        await self._stop.wait()

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Ask the main loop to end (the first SIGTERM or SIGINT)."""
        self._stop.set()

    async def shutdown(self) -> None:
        """Stop scheduling, cancel runs in flight, close every connection, stop serving."""
        self._ready = False
        self.scheduler.shutdown()
        clean = await self.dispatcher.cancel_all(grace=SHUTDOWN_GRACE)
        for entry in await self._history.cancel_unfinished(STOPPED_REASON):
            log.warning("run %s of %s/%s: %s", entry.id, entry.target, entry.scenario, entry.reason)
        aborted = self.registry.abort_all()
        if not clean or aborted:
            log.warning("shutdown: %d connection(s) aborted", aborted)
        if self.pool is not None:
            # Workers close what they still hold when their stdin ends; killed if they linger.
            await self.pool.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._runner is not None:
            await self._runner.cleanup()
        # After the HTTP server: a request still being answered may read the history.
        self._history.close()
        self.metrics.close()
        self.monitor.stop(background=True)
        log.info("spikewatch stopped")


class AcceptErrorFilter:
    """Condense what asyncio's own loop logs when the HTTP server cannot accept (EMFILE).

    CPython 3.11's selector loop does not stop after a failed accept
    (python/cpython#151615): one request while every descriptor is held logs the error
    with a traceback for each of the listener's backlog (128), and schedules as many
    retries, which fail with "Invalid file descriptor: -1" once shutdown closed the
    listener. The first is logged once a second without traceback; the second, only
    while stopping, is dropped. Everything else goes to the loop's default handler.
    """

    ACCEPT_FAILED = "socket.accept() out of system resource"

    def __init__(self, daemon: Daemon, clock: Callable[[], float] = time.monotonic) -> None:
        self._daemon = daemon
        self._clock = clock
        self._last = -math.inf

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        exc = context.get("exception")
        if message.startswith(self.ACCEPT_FAILED):
            now = self._clock()
            if now - self._last >= 1.0:
                self._last = now
                log.warning("%s: %s; no more of these for 1s", self.ACCEPT_FAILED, exc)
            return
        if (
            self._daemon.stopping
            and isinstance(exc, ValueError)
            and "Invalid file descriptor" in str(exc)
        ):
            return
        loop.default_exception_handler(context)


async def serve(daemon: Daemon) -> None:
    """Run the daemon until SIGTERM/SIGINT (graceful; a second one forces), SIGHUP reloads."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorFilter(daemon))
    main = asyncio.current_task()
    assert main is not None
    reloads: set[asyncio.Task[object]] = set()

    def on_stop(signum: signal.Signals) -> None:
        if daemon.stopping:  # a second signal: stop waiting, exit now
            log.warning("%s again: forcing exit", signum.name)
            daemon.registry.abort_all()  # the graceful path may not get to it now
            main.cancel()
            return
        log.info("%s: shutting down", signum.name)
        daemon.request_stop()

    def on_reload() -> None:
        task = loop.create_task(daemon.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        await daemon.startup()
        await daemon.main_loop()
    finally:
        try:
            await daemon.shutdown()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
