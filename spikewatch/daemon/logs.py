"""Log set-up (text or JSON lines) and the one structured line per finished run.

Every line passes through the config's :class:`~spikewatch.core.redact.Redactor` once
configured: its message, its fields and its traceback. A traceback quotes what an
exception says, and an exception may quote what a target sent back (a credential it
echoed, the JWT minted for the connection) or a config value; run results are redacted
where they are built, and this is the last line of defence for everything else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from spikewatch.core.result import RunResult

#: The logger of run lines, so that they can be routed or filtered on their own.
RUN_LOG = logging.getLogger("spikewatch.runs")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})))


def _unchanged(text: str) -> str:
    return text


class TextFormatter(logging.Formatter):
    """Time, level, logger and message on one line (and the traceback), redacted."""

    def __init__(self, redact: Callable[[str], str] = _unchanged) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Return the line, its traceback included, with every secret masked."""
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's ``extra`` fields merged in, redacted."""

    def __init__(self, redact: Callable[[str], str] = _unchanged) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one JSON object, every text value with its secrets masked."""
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        redact = self._redact
        # Masked before encoding: JSON's escapes would hide a secret holding a quote.
        return json.dumps(
            {k: redact(v) if isinstance(v, str) else v for k, v in doc.items()},
            default=lambda v: redact(str(v)),
        )


def configure_logging(fmt: str, level: str, redact: Callable[[str], str] = _unchanged) -> None:
    """Send logs to stderr as text or JSON lines at ``level``, masked by ``redact``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs every job start and end at INFO; the run line already says it.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))


def run_fields(result: RunResult) -> dict[str, Any]:
    """Return the key figures of a run as flat fields (no secret is ever among them)."""
    spike = result.spike
    recovery = result.recovery
    return {
        "run_id": result.id,
        "target": result.target,
        "scenario": result.scenario,
        "result": result.result.value,
        "duration_s": round(result.duration, 3),
        "baseline_ms": None
        if result.baseline.latency is None
        else round(result.baseline.latency * 1000, 3),
        "spike_ok": None if spike is None else spike.outcomes.get("ok", 0),
        "spike_attempted": None if spike is None else spike.attempted,
        "handshake_p95_ms": None
        if spike is None or spike.handshake is None
        else round(spike.handshake.p95 * 1000, 3),
        "recovered": None if recovery is None else recovery.recovered,
        "recovery_s": None
        if recovery is None or recovery.seconds is None
        else round(recovery.seconds, 3),
        "dropped_stable": None if result.stable is None else result.stable.dropped,
        "saturated": result.prober.saturated,
        "errors": {e.outcome.value: e.count for e in result.errors},
    }


def log_run(result: RunResult) -> None:
    """Write the run's one structured line."""
    fields = run_fields(result)
    text = " ".join(f"{k}={v}" for k, v in fields.items() if k != "errors" and v is not None)
    if fields["errors"]:
        text += " errors=" + ",".join(f"{k}:{v}" for k, v in fields["errors"].items())
    level = logging.INFO if result.result.value in ("passed", "failed") else logging.WARNING
    RUN_LOG.log(level, "run finished %s", text, extra=fields)
