"""Run ``promtool check metrics`` on an exposition; fail (never skip) without promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest

#: Where promtool comes from on the Debian images CI and the container use.
PACKAGE = "prometheus"


def check_metrics(exposition: bytes) -> str:
    """Feed ``exposition`` (classic text format) to promtool; return its findings, "" if clean.

    promtool 2.x lints only the classic text format, not OpenMetrics.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not on PATH: install Debian's "
            f"'{PACKAGE}' package (apt-get install -y {PACKAGE}) to run the metrics lint"
        )
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    findings = (done.stdout + done.stderr).decode()
    assert done.returncode in (0, 3), f"promtool failed ({done.returncode}): {findings}"
    return findings
