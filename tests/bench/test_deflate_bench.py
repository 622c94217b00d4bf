"""Keep bench/deflate.py working: one tiny run, end to end, no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import scaled

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_deflate_bench_prints_every_figure() -> None:
    """python bench/deflate.py: CPU per variant, memory per server and variant, no failure."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "deflate.py"), "--cycles", "20", "--held", "10"],
        capture_output=True,
        text=True,
        timeout=scaled(180),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    variants = ["off", "deflate", "client_nct", "both_nct"]
    assert list(figures["cpu"]) == variants
    assert all(cpu["failed"] == 0 for cpu in figures["cpu"].values())
    assert list(figures["memory"]) == [f"{k}/{v}" for k in ("node", "websockets") for v in variants]
    assert all(mem["held"] == 10 for mem in figures["memory"].values())
