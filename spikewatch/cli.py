"""The ``spikewatch`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from spikewatch import __version__
from spikewatch.config import (
    CONFIG_ENV,
    ScenarioConfig,
    SpikewatchConfig,
    TargetConfig,
    load_config,
)
from spikewatch.config.render import render_effective_config, secret_values
from spikewatch.core.redact import Redactor, printable
from spikewatch.daemon.compare import format_comparison, stored_comparison
from spikewatch.daemon.lifecycle import Daemon, serve
from spikewatch.daemon.logs import configure_logging
from spikewatch.daemon.run_store import RunStore, StoreError
from spikewatch.demo import DEFAULT_LISTEN, run_demo
from spikewatch.engine import eventloop
from spikewatch.engine.eventloop import EventLoopChoice
from spikewatch.engine.from_config import make_prober, worker_pool
from spikewatch.engine.runner import ProgressFn, RunReport, execute_run
from spikewatch.errors import ConfigError, ConfigProblem, UsageError
from spikewatch.heap import freeze_long_lived
from spikewatch.summary import format_summary
from spikewatch.target.cli import add_target_arguments, run_target_command

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; a spike needs a socket each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pick(
    config: SpikewatchConfig, target: str, scenario: str
) -> tuple[TargetConfig, ScenarioConfig]:
    """Return the named target and scenario, or raise UsageError listing what exists."""
    try:
        t = config.target(target)
    except KeyError:
        known = ", ".join(x.name for x in config.targets)
        raise UsageError(f"unknown target {target!r} (known: {known})") from None
    try:
        s = config.scenario(scenario)
    except KeyError:
        known = ", ".join(x.name for x in config.scenarios)
        raise UsageError(f"unknown scenario {scenario!r} (known: {known})") from None
    return t, s


def stderr_progress() -> ProgressFn:
    """Return a progress reporter that prints timestamped lines on stderr."""
    start = time.monotonic()

    def progress(message: str) -> None:
        line = printable(f"[{time.monotonic() - start:7.3f}s] {message}")
        print(line, file=sys.stderr, flush=True)

    return progress


async def run_once(
    config: SpikewatchConfig,
    target: TargetConfig,
    scenario: ScenarioConfig,
    *,
    progress: ProgressFn | None = None,
) -> RunReport:
    """Execute one run now with a prober built from ``config``.

    SIGTERM cancels the run, which closes every connection it opened on the way out.
    With ``prober.workers`` > 1 the worker processes live as long as the run.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    if progress is not None:
        progress(f"event loop: {eventloop.loop_name(loop)}")
    pool = worker_pool(config.prober)
    try:
        if pool is not None:
            await pool.start()
        prober = make_prober(config, pool=pool)
        return await execute_run(target, scenario, prober, progress=progress)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if pool is not None:
            await pool.close()


def cmd_once(args: argparse.Namespace) -> int:
    """``spikewatch once``: one run now; exit 0 when it passed, 1 when not."""
    config = load_config(args.config)
    target, scenario = pick(config, args.target, args.scenario)
    raise_fd_limit()
    progress = None if args.quiet else stderr_progress()
    freeze_long_lived()
    try:
        report = eventloop.run(
            run_once(config, target, scenario, progress=progress), config.prober.event_loop
        )
    except asyncio.CancelledError:
        print(
            "spikewatch: terminated; the run was stopped and its connections closed",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report.result.as_dict(), indent=2))
    else:
        print(format_summary(report.result))
    return EXIT_PASSED if report.result.passed else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    """``spikewatch run``: the daemon, until SIGTERM or SIGINT."""
    path = args.config or os.environ.get(CONFIG_ENV)
    config = load_config(path)
    configure_logging(config.log.format, config.log.level, Redactor(secret_values(config)))
    raise_fd_limit()
    daemon = Daemon(config, config_path=Path(path) if path else None)
    return _serve(serve(daemon), config.prober.event_loop)


def cmd_demo(args: argparse.Namespace) -> int:
    """``spikewatch demo``: the daemon on an embedded config and an in-process target."""
    configure_logging("text", args.log_level if args.log_level != "warning" else "info")
    raise_fd_limit()
    return _serve(run_demo(args.listen))


def _serve(main: Coroutine[Any, Any, None], event_loop: EventLoopChoice = "auto") -> int:
    try:
        eventloop.run(main, event_loop)
    except OSError as exc:
        print(f"spikewatch: cannot serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except asyncio.CancelledError:
        print("spikewatch: forced exit before a graceful shutdown", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_PASSED


def cmd_check_config(args: argparse.Namespace) -> int:
    """``spikewatch check-config``: validate and print the effective config."""
    config = load_config(args.file)
    print(render_effective_config(config), end="")
    print(
        f"# ok: {len(config.targets)} target(s), {len(config.scenarios)} scenario(s)",
        file=sys.stderr,
    )
    return EXIT_PASSED


def cmd_compare(args: argparse.Namespace) -> int:
    """``spikewatch compare``: one target version against another, from the stored runs."""
    config = load_config(args.config)
    target, scenario = pick(config, args.target, args.scenario)
    if config.storage.path is None:
        raise UsageError("compare reads the run history: set storage.path in the config")
    retention = config.storage.retention
    try:
        store = RunStore(
            config.storage.path, max_runs=retention.max_runs, max_age=retention.max_age
        )
    except StoreError as exc:
        raise ConfigError([ConfigProblem("storage.path", str(exc))]) from None
    try:
        comparison = stored_comparison(
            store, target.name, scenario.name, args.version, args.against
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps(comparison.as_dict(), indent=2))
    else:
        print(format_comparison(comparison))
    return EXIT_PASSED


def cmd_target(args: argparse.Namespace) -> int:
    """``spikewatch target``: serve the reference target."""
    return run_target_command(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="spikewatch",
        description="Fire WebSocket connection spikes at a target and measure its recovery.",
    )
    parser.add_argument("--version", action="version", version=f"spikewatch {__version__}")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    once = sub.add_parser("once", help="run one scenario against one target now")
    once.add_argument("--config", help="config file (default: $SPIKEWATCH_CONFIG)")
    once.add_argument("--target", required=True, help="target name from the config")
    once.add_argument("--scenario", required=True, help="scenario name from the config")
    once.add_argument("--json", action="store_true", help="print the result as JSON")
    once.add_argument("--quiet", action="store_true", help="no progress on stderr")
    once.set_defaults(func=cmd_once)

    run = sub.add_parser("run", help="run the daemon: scheduled runs, metrics, HTTP API")
    run.add_argument("--config", help="config file (default: $SPIKEWATCH_CONFIG)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", help="the daemon on a built-in config against a built-in target, in one process"
    )
    demo.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HTTP address (default {DEFAULT_LISTEN})"
    )
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a config and print it, secrets masked")
    check.add_argument("file", help="config file")
    check.set_defaults(func=cmd_check_config)

    compare = sub.add_parser(
        "compare", help="compare two target versions' recovery from the stored run history"
    )
    compare.add_argument("--config", help="config file (default: $SPIKEWATCH_CONFIG)")
    compare.add_argument("--target", required=True, help="target name from the config")
    compare.add_argument("--scenario", required=True, help="scenario name from the config")
    compare.add_argument("--version", required=True, help="the target version to judge")
    compare.add_argument("--against", required=True, help="the target version to judge it by")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(func=cmd_compare)

    target = sub.add_parser("target", help="serve the reference WebSocket target")
    add_target_arguments(target)
    target.set_defaults(func=cmd_target)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("spikewatch: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
