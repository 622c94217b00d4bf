"""The harness's own checks: Artillery's report and phase, the daemon at rest, end to end,
and the connect floor (bench/connect_floor.c and its pure-Python fallback)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

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


@pytest.fixture(scope="module")
def connect_floor() -> Iterator[ModuleType]:
    """bench/connect_floor.py, imported the way bench/run.py imports it."""
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("connect_floor")
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
        assert scrape["rss_bytes_after"] > 0
    assert shape["healthz_during_scrape_seconds"] > 0
    assert "/metrics text" in done.stdout


# -- the connect floor ----------------------------------------------------------------------

FLOOR_SIZES = (20, 40)
FLOOR_PROCESSES = (1, 2)


def _need_compiler(connect_floor: ModuleType) -> None:
    if connect_floor.find_compiler() is None:
        pytest.fail(
            "the connect floor's C test needs a C compiler on PATH: "
            f"none of {', '.join(connect_floor.COMPILERS)} found"
        )


def _check_floor(result: dict[str, Any], impl: str) -> None:
    """Every (size, processes) measured, complete and consistent; never a time bound."""
    assert result["impl"] == impl
    wanted = [(n, p) for n in FLOOR_SIZES for p in FLOOR_PROCESSES]
    assert [(f["connections"], f["processes"]) for f in result["figures"]] == wanted
    for f in result["figures"]:
        assert f["rounds"] == 1
        assert 0 <= f["lateness_p50_seconds"] <= f["lateness_p99_seconds"]
        assert f["lateness_p99_seconds"] <= f["lateness_max_seconds"]
        # The last stamp comes just before the last connect, which returns after it.
        assert f["lateness_max_seconds"] <= f["last_connect_seconds"]
        assert f["lateness_p99_rounds"] == [f["lateness_p99_seconds"]]
    assert [(r["n"], r["processes"]) for r in result["raw"]] == wanted
    for r in result["raw"]:
        assert r["impl"] == impl
        assert r["round"] == 1
        assert r["established"] == r["n"]
        # One ready margin per process: the processes asked for ran, each in time.
        assert len(r["ready_margin_seconds"]) == r["processes"]
        assert all(margin > 0 for margin in r["ready_margin_seconds"])
        late = r["lateness_seconds"]
        assert 0 <= late["min"] <= late["p50"] <= late["p99"] <= late["max"]
    assert result["parameters"]["backlog"] >= max(FLOOR_SIZES)


def test_the_c_floor_gives_complete_figures(connect_floor: ModuleType) -> None:
    """bench/connect_floor.c, compiled with cc -O2: every size from 1 and 2 processes."""
    _need_compiler(connect_floor)
    result = connect_floor.measure(FLOOR_SIZES, FLOOR_PROCESSES, 1, impl="c")
    _check_floor(result, "c")
    assert result["compiler"] == connect_floor.find_compiler()
    assert result["note"] is None


def test_the_python_fallback_gives_complete_figures(connect_floor: ModuleType) -> None:
    """The pure-Python fallback, forced: the same figures, said to come from Python."""
    result = connect_floor.measure(FLOOR_SIZES, FLOOR_PROCESSES, 1, impl="python")
    _check_floor(result, "python")
    assert result["compiler"] is None


def test_without_a_compiler_the_floor_falls_back_to_python_and_says_so(
    connect_floor: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cc or gcc on PATH: auto measures in Python, and notes why; c refuses, naming them."""
    monkeypatch.setenv("PATH", str(tmp_path))
    result = connect_floor.measure([20], [1], 1, impl="auto")
    assert result["impl"] == "python"
    assert "no C compiler on PATH (looked for cc, gcc)" in result["note"]
    with pytest.raises(connect_floor.FloorError, match=r"no C compiler on PATH \(looked for cc"):
        connect_floor.measure([20], [1], 1, impl="c")


def test_a_floor_beyond_the_bounds_is_refused(connect_floor: ModuleType, tmp_path: Path) -> None:
    """N past 10000 or past 4 listen backlogs, P past 16 or N: refused, saying why.

    (4 backlogs of the default 4096 are past 10000: that refusal is reachable only where
    net.core.somaxconn is under 2500, and checked there.)
    """
    backlog = connect_floor.effective_backlog()
    beyond = 4 * backlog + 1
    past_backlogs = beyond <= connect_floor.MAX_CONNECTIONS
    refusals = [
        ([10_001], [1], "N=10001 refused: need 1 <= N <= 10000"),
        ([40], [17], "P=17 refused"),
        ([2], [3], "P=3 refused"),
    ]
    if past_backlogs:
        refusals.append(([beyond], [1], f"N={beyond} refused: it exceeds the listen backlog"))
    for sizes, processes, message in refusals:
        for impl in ("c", "python"):
            with pytest.raises(connect_floor.RefusedError, match=message):
                connect_floor.measure(sizes, processes, 1, impl=impl)
    # The programs themselves refuse too, with exit status 2 and a message.
    _need_compiler(connect_floor)
    binary = connect_floor.compile_floor(connect_floor.find_compiler(), tmp_path)
    script = [sys.executable, str(BENCH / "connect_floor.py")]
    commands = [
        ([str(binary), "10001", "1"], "N=10001, P=1; need 1 <= N <= 10000"),
        ([*script, "--once", "10001", "1"], "N=10001 refused"),
        ([*script, "--sizes", "10001"], "N=10001 refused"),
    ]
    if past_backlogs:
        commands.append(([str(binary), str(beyond), "1"], "exceeds the listen backlog"))
    for command, message in commands:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=scaled(30), check=False
        )
        assert done.returncode == 2, (command, done.stderr)
        assert message in done.stderr
        assert not done.stdout


def test_the_floor_cli_prints_a_table_and_one_json_line() -> None:
    """python bench/connect_floor.py: the table, then every figure as one JSON line."""
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "connect_floor.py"),
            "--sizes",
            "20",
            "--processes",
            "1",
            "2",
            "--rounds",
            "1",
            "--impl",
            "python",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *text, last = done.stdout.strip().splitlines()
    assert text[0].startswith("Connect floor (python)")
    assert "   20 from  2 process(es): lateness p50" in done.stdout
    result = json.loads(last)
    assert [(f["connections"], f["processes"]) for f in result["figures"]] == [(20, 1), (20, 2)]
    assert len(result["raw"]) == 2
