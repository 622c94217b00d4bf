"""The harness's own checks: Artillery's report and phase, the daemon at rest, end to end."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import scaled

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def artillery() -> Iterator[ModuleType]:
    """bench/artillery.py, imported the way bench/run.py imports it (bench/ on sys.path)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("artillery")
    finally:
        sys.path.remove(str(BENCH))


def _report(**counters: int) -> dict[str, object]:
    return {"aggregate": {"counters": counters}}


def test_a_complete_artillery_run_is_accepted(artillery: ModuleType) -> None:
    """Every virtual user created and completed, every message sent and received: accepted."""
    counters = artillery.check_report(
        _report(
            **{
                "vusers.created": 5,
                "vusers.completed": 5,
                "websocket.messages_sent": 5,
                "websocket.messages_received": 10,
            }
        ),
        5,
    )
    assert counters["vusers.completed"] == 5


@pytest.mark.parametrize(
    "counters",
    [
        {"vusers.created": 5, "vusers.completed": 4, "vusers.failed": 1},
        {"vusers.created": 5, "vusers.completed": 5, "errors.ECONNREFUSED": 1},
        {"vusers.created": 4, "vusers.completed": 4},
        {"vusers.created": 5, "vusers.completed": 5, "websocket.messages_received": 5},
    ],
    ids=["failed", "errors", "too-few-arrivals", "echo-missing"],
)
def test_an_incomplete_artillery_run_fails_the_bench(
    artillery: ModuleType, counters: dict[str, int]
) -> None:
    """A run with a failed user, an error or a missing message gives no figure."""
    full = {"websocket.messages_sent": 5, "websocket.messages_received": 10, **counters}
    with pytest.raises(artillery.ArtilleryError, match="did not complete"):
        artillery.check_report(_report(**full), 5)


def test_a_report_without_counters_fails_the_bench(artillery: ModuleType) -> None:
    """A report of another shape is an error, not zero users."""
    with pytest.raises(artillery.ArtilleryError, match="no aggregate counters"):
        artillery.check_report({"aggregate": {}}, 5)


@pytest.mark.parametrize("sizes", [[1000, 3000], [20, 40], [300, 700], [2000, 5000]])
def test_the_phase_makes_exactly_each_size(artillery: ModuleType, sizes: list[int]) -> None:
    """Both sizes share one phase in which Artillery's arithmetic makes exactly N arrivals."""
    phase = artillery.phase_ms(sizes)
    assert all(artillery._arrivals(phase, n) == n for n in sizes)


def test_sizes_without_a_short_common_phase_are_refused(artillery: ModuleType) -> None:
    """Sizes whose least common multiple is huge cannot share an exact phase: refused."""
    with pytest.raises(artillery.ArtilleryError, match="no Artillery phase"):
        artillery.phase_ms([4999, 4997])


def test_daemon_load_measures_the_daemon_at_rest_and_its_scrapes(tmp_path: Path) -> None:
    """daemon_load.py starts the real daemon, measures it at rest and times /metrics."""
    out = tmp_path / "daemon.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "daemon_load.py"),
            "--shapes",
            "2x2",
            "--idle-seconds",
            "1",
            "--scrapes",
            "5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (shape,) = json.loads(out.read_text())["daemon"]
    assert (shape["targets"], shape["scenarios"], shape["pairs"]) == (2, 2, 4)
    assert shape["idle"]["cpu_percent"] >= 0
    assert shape["idle"]["rss_bytes"] > 0
    for name, kind in (("text", "text/plain"), ("openmetrics", "application/openmetrics-text")):
        scrape = shape[f"scrape_{name}"]
        assert scrape["content_type"].startswith(kind)
        assert scrape["scrapes"] == 5
        assert scrape["samples"] > 0
        assert 0 < scrape["p50"] <= scrape["p99"] <= scrape["max"]
    assert shape["healthz_during_scrape_seconds"] > 0
    assert "/metrics text" in done.stdout
