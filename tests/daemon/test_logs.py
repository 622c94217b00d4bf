"""Tests for spikewatch.daemon.logs."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spikewatch.core.outcomes import Outcome, Phase, RunResultKind
from spikewatch.core.redact import Redactor
from spikewatch.core.result import (
    BaselineSummary,
    ErrorGroup,
    ProberReport,
    RunResult,
    StableSummary,
)
from spikewatch.daemon.logs import RUN_LOG, JsonFormatter, configure_logging, log_run, run_fields
from tests.daemon.fakes import NOW, finished_result


def with_errors(result: RunResult) -> RunResult:
    """Return ``result`` with a stable phase and two groups of errors."""
    return dataclasses.replace(
        result,
        stable=StableSummary(
            connections=10, opened=10, dropped=2, outcomes={"ok": 10}, message_rtt=None
        ),
        errors=(
            ErrorGroup(Outcome.TIMEOUT, 1, "no upgrade answer within 5s", Phase.SPIKE),
            ErrorGroup(Outcome.HTTP_STATUS, 3, "upgrade answered 503", Phase.RECOVERY),
        ),
    )


def target_down(result: RunResult) -> RunResult:
    """Return ``result`` as a run that never fired its spike."""
    return dataclasses.replace(
        result,
        result=RunResultKind.TARGET_DOWN,
        baseline=BaselineSummary(probes=5, ok=1, outcomes={"ok": 1, "refused": 4}, latency=None),
        spike=None,
        recovery=None,
    )


# --- run_fields ---------------------------------------------------------------------------


def test_run_fields_of_a_passed_run() -> None:
    """A run's key figures come out flat, in milliseconds and seconds, rounded."""
    result = dataclasses.replace(
        finished_result(duration=12.34567, recovery_seconds=1.23456789),
        baseline=BaselineSummary(probes=5, ok=5, outcomes={"ok": 5}, latency=0.0041234),
    )
    assert run_fields(result) == {
        "run_id": "run-done",
        "target": "chat-staging",
        "scenario": "avalanche",
        "result": "passed",
        "duration_s": 12.346,
        "baseline_ms": 4.123,
        "spike_ok": 24,
        "spike_attempted": 25,
        "handshake_p95_ms": 50.0,
        "recovered": True,
        "recovery_s": 1.235,
        "dropped_stable": None,
        "saturated": False,
        "errors": {},
    }


def test_run_fields_with_stable_and_errors() -> None:
    """Dropped stable connections and error counts per outcome are included."""
    fields = run_fields(with_errors(finished_result(result=RunResultKind.FAILED)))
    assert fields["result"] == "failed"
    assert fields["dropped_stable"] == 2
    assert fields["errors"] == {"timeout": 1, "http_status": 3}


def test_run_fields_of_a_run_without_spike() -> None:
    """A target_down run has no spike or recovery figures and no baseline latency."""
    fields = run_fields(target_down(finished_result()))
    assert fields["result"] == "target_down"
    for name in (
        "baseline_ms",
        "spike_ok",
        "spike_attempted",
        "handshake_p95_ms",
        "recovered",
        "recovery_s",
    ):
        assert fields[name] is None, name


def test_run_fields_of_a_spike_without_handshakes_or_recovery() -> None:
    """A spike that never completed a handshake, and no recovery, give None figures."""
    result = finished_result(recovery_seconds=None)
    assert result.spike is not None
    result = dataclasses.replace(
        result, spike=dataclasses.replace(result.spike, handshake=None, outcomes={"refused": 25})
    )
    fields = run_fields(result)
    assert fields["spike_ok"] == 0
    assert fields["handshake_p95_ms"] is None
    assert fields["recovered"] is False
    assert fields["recovery_s"] is None


def test_run_fields_show_saturation() -> None:
    """An invalid run says the prober was saturated."""
    result = dataclasses.replace(
        finished_result(result=RunResultKind.INVALID),
        prober=ProberReport(saturated=True, loop_lag_p99=0.3, cpu_percent=99.0, rss_bytes=1),
    )
    assert run_fields(result)["saturated"] is True


# --- log_run -------------------------------------------------------------------------------


def run_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Return the records of the run logger."""
    return [r for r in caplog.records if r.name == RUN_LOG.name]


@pytest.mark.parametrize("kind", [RunResultKind.PASSED, RunResultKind.FAILED])
def test_judged_runs_are_logged_at_info(
    kind: RunResultKind, caplog: pytest.LogCaptureFixture
) -> None:
    """A passed or failed run writes one INFO line with its figures."""
    caplog.set_level(logging.DEBUG, logger=RUN_LOG.name)
    log_run(finished_result(result=kind))
    [record] = run_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        f"run finished run_id=run-done target=chat-staging scenario=avalanche result={kind.value}"
        " duration_s=12.5 baseline_ms=4.0 spike_ok=24 spike_attempted=25 handshake_p95_ms=50.0"
        " recovered=True recovery_s=1.5 saturated=False"
    )


@pytest.mark.parametrize(
    "kind",
    [RunResultKind.TARGET_DOWN, RunResultKind.ABORTED, RunResultKind.INVALID, RunResultKind.ERROR],
)
def test_other_runs_are_logged_at_warning(
    kind: RunResultKind, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that could not be judged writes one WARNING line."""
    caplog.set_level(logging.DEBUG, logger=RUN_LOG.name)
    log_run(finished_result(result=kind))
    [record] = run_records(caplog)
    assert record.levelno == logging.WARNING
    assert f"result={kind.value}" in record.getMessage()


def test_log_line_leaves_out_missing_figures_and_lists_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Figures that are None are left out; errors come last as outcome:count."""
    caplog.set_level(logging.DEBUG, logger=RUN_LOG.name)
    log_run(with_errors(target_down(finished_result())))
    [record] = run_records(caplog)
    message = record.getMessage()
    assert "spike_ok" not in message
    assert "baseline_ms" not in message
    assert "None" not in message
    assert "dropped_stable=2" in message
    assert message.endswith(" saturated=False errors=timeout:1,http_status:3")


def test_log_record_carries_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    """The record has every run field as an attribute, for JSON logs."""
    caplog.set_level(logging.DEBUG, logger=RUN_LOG.name)
    result = with_errors(finished_result())
    log_run(result)
    [record] = run_records(caplog)
    for name, value in run_fields(result).items():
        assert getattr(record, name) == value, name


# --- JsonFormatter --------------------------------------------------------------------------


def make_record(**extra: Any) -> logging.LogRecord:
    """Return a record as a logger would make it, created at NOW."""
    record = logging.getLogger("spikewatch.test").makeRecord(
        "spikewatch.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None, extra=extra
    )
    record.created = NOW
    return record


def test_json_formatter_writes_one_object() -> None:
    """A record becomes one JSON object with time, level, logger and message."""
    line = JsonFormatter().format(make_record())
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-11-24T10:00:00.000+00:00",
        "level": "warning",
        "logger": "spikewatch.test",
        "message": "hello world",
    }


def test_json_formatter_merges_extra_fields() -> None:
    """Extra fields are merged in; values JSON cannot hold are written as text."""
    doc = json.loads(
        JsonFormatter().format(make_record(run_id="r1", errors={"timeout": 1}, why=Outcome.OK))
    )
    assert doc["run_id"] == "r1"
    assert doc["errors"] == {"timeout": 1}
    assert doc["why"] == "ok"


def test_json_formatter_includes_the_exception() -> None:
    """A record with exc_info carries the formatted traceback."""
    try:
        raise ValueError("broken")  # noqa: TRY301 - a real traceback to format
    except ValueError:
        record = make_record()
        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert doc["exception"].startswith("Traceback (most recent call last):")
    assert doc["exception"].endswith("ValueError: broken")


def test_json_formatter_on_a_run_line() -> None:
    """A run line in JSON has the run's fields at the top level."""
    result = with_errors(finished_result())
    record = make_record(**run_fields(result))
    doc = json.loads(JsonFormatter().format(record))
    assert doc["target"] == "chat-staging"
    assert doc["errors"] == {"timeout": 1, "http_status": 3}
    assert doc["dropped_stable"] == 2


# --- configure_logging ----------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[logging.Logger]:
    """Give back the root logger's handlers and level, and apscheduler's level, afterwards."""
    root = logging.getLogger()
    apscheduler = logging.getLogger("apscheduler")
    handlers, level, aps_level = list(root.handlers), root.level, apscheduler.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    apscheduler.setLevel(aps_level)


def test_configure_json_logging(
    restore_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """JSON format installs one stderr handler that writes JSON lines at the level."""
    root = restore_logging
    configure_logging("json", "info")
    assert len(root.handlers) == 1
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    assert root.level == logging.INFO
    logging.getLogger("spikewatch.test").info("ready", extra={"port": 9878})
    logging.getLogger("spikewatch.test").debug("not shown")
    [line] = capsys.readouterr().err.splitlines()
    doc = json.loads(line)
    assert (doc["level"], doc["message"], doc["port"]) == ("info", "ready", 9878)


def test_configure_text_logging(
    restore_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text format installs one handler with time, level, logger and message."""
    root = restore_logging
    configure_logging("text", "DEBUG")
    assert len(root.handlers) == 1
    assert root.level == logging.DEBUG
    logging.getLogger("spikewatch.test").debug("details %d", 3)
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(" DEBUG spikewatch.test: details 3")


def test_configure_logging_replaces_earlier_handlers(restore_logging: logging.Logger) -> None:
    """Configuring twice leaves exactly one handler, the last one."""
    root = restore_logging
    configure_logging("text", "info")
    configure_logging("json", "info")
    assert len(root.handlers) == 1
    assert isinstance(root.handlers[0].formatter, JsonFormatter)


@pytest.mark.parametrize(
    ("level", "apscheduler_level"),
    [("debug", logging.WARNING), ("info", logging.WARNING), ("error", logging.ERROR)],
)
def test_configure_logging_quiets_apscheduler(
    restore_logging: logging.Logger, level: str, apscheduler_level: int
) -> None:
    """APScheduler's job chatter is kept to warnings, or the root level when higher."""
    configure_logging("text", level)
    assert logging.getLogger("apscheduler").level == apscheduler_level


def _log_a_leak(fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Log a message, a field and a traceback that each quote a secret; return the output."""
    secret = 'hunter2-"quoted"-secret'
    configure_logging(fmt, "info", Redactor([secret]))
    log = logging.getLogger("spikewatch.test")

    def fail() -> None:
        raise ValueError(f"the target echoed {secret}")

    try:
        fail()
    except ValueError:
        log.exception("failed with %s", secret, extra={"header": secret})
    err = capsys.readouterr().err
    assert "hunter2" not in err
    return err


def test_text_logs_mask_secrets_in_message_and_traceback(
    restore_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret in a text line's message and its traceback is masked."""
    err = _log_a_leak("text", capsys)
    assert "failed with ***" in err
    assert "ValueError: the target echoed ***" in err


def test_json_logs_mask_secrets_in_fields_and_traceback(
    restore_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret holding quotes is masked in a JSON line's message, fields and exception."""
    doc = json.loads(_log_a_leak("json", capsys))
    assert (doc["message"], doc["header"]) == ("failed with ***", "***")
    assert doc["exception"].endswith("ValueError: the target echoed ***")


def test_json_logs_mask_secrets_in_values_that_are_not_text(
    restore_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A field JSON cannot encode is written as its text, masked too."""
    configure_logging("json", "info", Redactor(["s3cr3t-value"]))
    logging.getLogger("spikewatch.test").info("ready", extra={"url": Path("/x/s3cr3t-value")})
    doc = json.loads(capsys.readouterr().err)
    assert doc["url"] == "/x/***"
