"""Keep the benchmark harness working: one tiny run, end to end, no timing assertions."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scaled

BENCH = Path(__file__).resolve().parents[2] / "bench"
PYTHON_CLIENTS = ("floor", "spikewatch", "spikewatch-3step", "websockets", "aiohttp")
LOOPS = ("asyncio", "uvloop")


def _need_tools() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the benchmark smoke test needs {' and '.join(missing)} on PATH")
    for module in ("websockets", "uvloop"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"the benchmark smoke test needs {module}: pip install -e '.[test,bench]'")


def test_bench_run_gives_figures_for_every_client_and_part(tmp_path: Path) -> None:
    """bench/run.py measures every client on both loops, Artillery, held RSS, avalanches and
    the connect floor."""
    _need_tools()
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--parts",
            "cpu",
            "rss",
            "avalanche",
            "floor",
            "--sizes",
            "20",
            "40",
            "--rounds",
            "1",
            "--hold-sizes",
            "20",
            "40",
            "--avalanche",
            # Long enough (~50 ms) for the prober's 20 ms lag sampler to see the spike.
            "400",
            "--avalanche-batches",
            "2",
            "--avalanche-interval",
            "0.05",
            "--avalanche-rounds",
            "1",
            # 3,000: the bar's batch, so that the floor is shown beside its lateness line.
            "--floor-sizes",
            "20",
            "3000",
            "--floor-processes",
            "1",
            "2",
            "--floor-rounds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())

    keys = {f"{c}/{loop}" for c in PYTHON_CLIENTS for loop in LOOPS}
    cpu = report["cpu"]
    assert set(cpu["clients"]) == keys | {"artillery/node"}
    for key, figures in cpu["clients"].items():
        assert math.isfinite(figures["cpu_per_connection_seconds"]), key
        if figures["client"] != "artillery":
            assert figures["rate_per_second"] > 0, key
            assert figures["burst_loop_lag_p99_seconds"] is not None, key
    assert all(sample["failed"] == 0 for sample in cpu["samples"])
    artillery = [s for s in cpu["samples"] if s["client"] == "artillery"]
    assert sorted(s["counters"]["vusers.completed"] for s in artillery) == [20, 40]
    assert all(s["cpu_seconds"] > 0 for s in artillery)
    assert all(not s["refused_non_loopback"] for s in artillery)

    rss = report["rss"]
    assert set(rss["clients"]) == keys
    for sample in rss["samples"]:
        assert sample["held"] == sample["connections"]
        assert sample["rss_held_bytes"] > 0

    runs = report["avalanche"]["runs"]
    assert sorted((r["loop"], r["batches"]) for r in runs) == [
        (loop, b) for loop in LOOPS for b in (1, 2)
    ]
    for run in runs:
        assert run["loop_lag_p99_seconds"] is not None
        assert run["start_lateness_p99_seconds"] is not None
        assert run["rate_per_second"] > 0

    floor = report["connect_floor"]
    assert floor["impl"] in ("c", "python")
    assert [(f["connections"], f["processes"]) for f in floor["figures"]] == [
        (n, p) for n in (20, 3000) for p in (1, 2)
    ]
    for f in floor["figures"]:
        assert 0 <= f["lateness_p50_seconds"] <= f["lateness_p99_seconds"]
        assert f["lateness_p99_seconds"] <= f["lateness_max_seconds"]
    assert all(r["established"] == r["n"] for r in floor["raw"])
    assert [(f["connections"], f["processes"]) for f in floor["at_bar"]] == [(3000, 1), (3000, 2)]
    lateness_bar = "avalanche of 3,000 in one batch: start lateness p99 (ms)"
    bar_text = done.stdout.split("\nThe bar\n", 1)[1].splitlines()
    beside = [i for i, line in enumerate(bar_text) if lateness_bar in line]
    assert f"the floor ({floor['impl']}, bare kernel connects" in bar_text[beside[-1] + 1]

    assert report["bar"]
    assert report["machine"]["artillery"]
    for key in [*keys, "artillery/node"]:
        assert key in done.stdout


def test_bench_fails_loudly_without_node(tmp_path: Path) -> None:
    """Without node and npm on PATH, the bench says so and exits 1 instead of measuring."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--json", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "needs node and npm on PATH" in done.stderr
    assert not (tmp_path / "x.json").exists()


def test_bench_ab_compares_two_trees_in_one_run() -> None:
    """bench/ab.py measures two checkouts and the floor in one run and gives their ratios."""
    _need_tools()
    root = BENCH.parent
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "ab.py"),
            "--before",
            str(root),
            "--after",
            str(root),
            "--sizes",
            "20",
            "40",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
        cwd=BENCH,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["cpu_per_connection_us"]) == {"before", "after", "floor"}
    assert all(len(rounds) == 1 for rounds in report["rounds_us"].values())
    for name in ("after_over_before", "before_over_floor", "after_over_floor"):
        assert math.isfinite(report[name]), name
