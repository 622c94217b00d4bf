"""A short soak of the real daemon: no fd, task or (much) memory growth across runs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import scaled

SOAK = Path(__file__).resolve().parents[2] / "bench" / "soak.py"
SHORT = ("--runs", "25", "--warmup", "5", "--interval", "0.5")


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules.setdefault("soak", module)
    spec.loader.exec_module(sys.modules["soak"])
    return sys.modules["soak"]


def test_short_soak_leaks_no_fd_task_or_memory(tmp_path: Path) -> None:
    """25 scheduled runs (some failing, one pair hostile): fds and tasks at rest unchanged,
    no slot in use at rest, RSS grows < 10 MB."""
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), *SHORT, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    growth = report["growth"]
    assert growth["open_fds"] <= 0, report
    assert growth["event_loop_tasks"] <= 0, report
    assert growth["rss_bytes"] < 10 * 2**20, report
    assert report["start"]["open_connections"] == report["end"]["open_connections"] == 0, report
    runs = report["runs"]
    assert runs["done"] >= 25
    assert sum(runs["by_result"].values()) == runs["done"]
    # The refused target's runs alone make some of them target_down.
    assert runs["by_result"].get("target_down", 0) > 0, runs
    assert report["end"]["event_loop_tasks"] > 0  # the gauge was read inside the loop
    # The hostile target was met, and said so on its way out.
    [hostile] = report["hostile_target"]
    assert "ping_flood" in hostile, hostile
    assert report["daemon"] == report["daemon"] | {"exit_status": 0, "tracebacks": 0}
    assert report["goals_met"] is True
    assert "goals met" in done.stdout


def report_with(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "growth": {"rss_bytes": 0, "open_fds": 0, "event_loop_tasks": 0},
        "start": {"open_connections": 0},
        "end": {"open_connections": 0},
        "daemon": {"exit_status": 0, "tracebacks": 0, "first_traceback": []},
        "degrade_failures": [],
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        report[section] = report[section] | {name: value} if name else value
    return report


def test_goals_name_every_growth_and_unclean_exit() -> None:
    """judge() names each goal missed: RSS ≥ 10 MB, any fd or task growth, a slot in use at
    rest, exit, traceback."""
    soak = load_soak()
    assert soak.judge(report_with()) == []
    assert soak.judge(report_with(growth__rss_bytes=10 * 2**20 - 1)) == []
    missed = soak.judge(
        report_with(
            growth__rss_bytes=10 * 2**20,
            growth__open_fds=1,
            growth__event_loop_tasks=2,
            end__open_connections=3,
            daemon__exit_status=None,
            daemon__tracebacks=1,
            daemon__first_traceback=["Traceback (most recent call last):", "ValueError: x"],
            degrade_failures=["POST x: refused"],
        )
    )
    assert missed == [
        "RSS grew by 10.0 MB (goal: < 10 MB)",
        "open fds grew by 1 (goal: no growth)",
        "event-loop tasks grew by 2 (goal: no growth)",
        "slots in use at rest: 0 at the start, 3 at the end (goal: 0)",
        "the daemon exited with None on SIGTERM (goal: 0)",
        "the daemon printed 1 traceback(s), the first:\n"
        "    Traceback (most recent call last):\n    ValueError: x",
        "degrading the targets failed: POST x: refused",
    ]


def test_arguments_are_bounded() -> None:
    """The soak refuses unbounded runs and intervals too short for a schedule."""
    soak = load_soak()
    for argv in (["--runs", "0"], ["--runs", "5001"], ["--interval", "0.1"]):
        with pytest.raises(SystemExit) as caught:
            soak.parse_args(argv)
        assert caught.value.code == 2, argv
    assert soak.parse_args(["--runs", "5000", "--interval", "0.2"]).timeout > 0
