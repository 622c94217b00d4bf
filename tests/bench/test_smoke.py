"""Keep the benchmark harness working: one tiny run, end to end, no timing assertions."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import scaled

BENCH = Path(__file__).resolve().parents[2] / "bench"
CLIENTS = {"floor", "spikewatch", "websockets", "aiohttp"}


def test_bench_run_gives_figures_for_every_client(tmp_path: Path) -> None:
    """bench/run.py starts the Node target, measures every client and writes parseable JSON."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the benchmark smoke test needs {' and '.join(missing)} on PATH")
    if importlib.util.find_spec("websockets") is None:
        pytest.fail("the benchmark smoke test needs websockets: pip install -e '.[test,bench]'")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--sizes",
            "20",
            "40",
            "--rounds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["clients"]) == CLIENTS
    for figures in report["clients"].values():
        assert figures["cpu_per_connection_seconds"] is not None
        assert figures["rate_per_second"] > 0
    assert all(sample["failed"] == 0 for sample in report["samples"])
    for client in CLIENTS:
        assert client in done.stdout
