"""The command line as a user runs it: real processes, exit codes, output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import scaled

SPIKEWATCH = [sys.executable, "-m", "spikewatch"]


def spikewatch(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SPIKEWATCH, *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def target_url() -> Iterator[str]:
    """A reference target in its own process, on a free port."""
    proc = subprocess.Popen(
        [*SPIKEWATCH, "target", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"serving (ws://\S+)", line)
    assert match, line
    yield match.group(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=scaled(10)) == 0
    proc.stderr.close()


def config_file(tmp_path: Path, url: str, thresholds: dict[str, object] | None = None) -> Path:
    doc = {
        "targets": [
            {
                "name": "ref",
                "url": url,
                "welcome": {"match": r'"type":\s*"welcome"'},
                "echo": {"payload": '{"seq":{seq}}', "match": '"seq":{seq}'},
            }
        ],
        "scenarios": [
            {
                "name": "quick",
                "spike": {"connections": 20, "batches": 2, "batch_interval": "100ms"},
                "baseline": {"probes": 3, "interval": "50ms"},
                "recovery": {
                    "probe_interval": "100ms",
                    "timeout": "10s",
                    "tolerance": 1.0,
                    "slack": "20ms",
                },
                "thresholds": thresholds or {"success_ratio": 1.0},
            }
        ],
    }
    path = tmp_path / "spikewatch.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_once_json_passes_with_exit_0(tmp_path: Path, target_url: str) -> None:
    """`once --json` prints the contract's JSON and exits 0 when the run passed."""
    path = config_file(tmp_path, target_url)
    proc = spikewatch(
        "once", "--config", str(path), "--target", "ref", "--scenario", "quick", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["result"] == "passed"
    assert result["target"] == "ref"
    assert result["scenario"] == "quick"
    assert result["spike"]["attempted"] == 20
    assert set(result) >= {
        "id",
        "started_at",
        "duration_seconds",
        "baseline",
        "spike",
        "stable",
        "recovery",
        "thresholds",
        "prober",
        "errors",
    }
    assert "baseline:" in proc.stderr
    assert "verdict: passed" in proc.stderr


def test_once_summary_and_exit_1_when_a_threshold_fails(tmp_path: Path, target_url: str) -> None:
    """A missed threshold prints a readable summary and exits 1."""
    path = config_file(tmp_path, target_url, {"handshake_p95": 0.000001})
    proc = spikewatch("once", "--config", str(path), "--target", "ref", "--scenario", "quick")
    assert proc.returncode == 1, proc.stderr
    assert "FAILED" in proc.stdout
    assert "FAIL handshake_p95" in proc.stdout


def test_once_config_from_environment(tmp_path: Path, target_url: str) -> None:
    """SPIKEWATCH_CONFIG names the file and SPIKEWATCH_* overrides a value."""
    path = config_file(tmp_path, target_url)
    proc = spikewatch(
        "once",
        "--target",
        "ref",
        "--scenario",
        "quick",
        "--json",
        "--quiet",
        env={"SPIKEWATCH_CONFIG": str(path), "SPIKEWATCH_SCENARIOS__0__SPIKE__CONNECTIONS": "6"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spike"]["attempted"] == 6
    assert proc.stderr == ""


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_once_runs_on_the_chosen_event_loop(
    tmp_path: Path, target_url: str, event_loop: str
) -> None:
    """The same run passes on uvloop and on the stdlib loop, and says which one it ran on."""
    path = config_file(tmp_path, target_url)
    proc = spikewatch(
        "once",
        "--config",
        str(path),
        "--target",
        "ref",
        "--scenario",
        "quick",
        "--json",
        env={"SPIKEWATCH_PROBER__EVENT_LOOP": event_loop},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"event loop: {event_loop}" in proc.stderr
    assert json.loads(proc.stdout)["result"] == "passed"


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    """An unknown target name exits 2 and lists the known ones."""
    path = config_file(tmp_path, "ws://127.0.0.1:9/ws")
    proc = spikewatch("once", "--config", str(path), "--target", "nope", "--scenario", "quick")
    assert proc.returncode == 2
    assert "unknown target 'nope' (known: ref)" in proc.stderr


def test_bad_config_names_every_field_without_traceback(tmp_path: Path) -> None:
    """A bad file exits 2 with one line per problem naming its field path."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "Bad Name", "url": "http://x"}],
                "scenarios": [{"name": "s", "spike": {"connections": 5, "batches": 0}}],
            }
        )
    )
    for argv in (
        ["check-config", str(path)],
        ["once", "--config", str(path), "--target", "x", "--scenario", "s"],
    ):
        proc = spikewatch(*argv)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert "targets[0].name" in proc.stderr
        assert "targets[0].url" in proc.stderr
        assert "scenarios[0].spike.batches" in proc.stderr


def test_missing_config_is_a_usage_error() -> None:
    """No --config and no SPIKEWATCH_CONFIG exits 2 with a clear message."""
    env = {k: v for k, v in os.environ.items() if k != "SPIKEWATCH_CONFIG"}
    proc = subprocess.run(
        [*SPIKEWATCH, "once", "--target", "a", "--scenario", "b"],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(30),
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    """check-config prints the effective config with every secret masked."""
    secret = tmp_path / "jwt.key"
    secret.write_text("super-secret-jwt-key-value-0123456789\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "t",
                        "url": "wss://example.test/ws?token=url-token-456",
                        "auth": {"jwt": {"secret_file": str(secret)}},
                    }
                ],
                "scenarios": [{"name": "s", "spike": {"connections": 5}}],
            }
        )
    )
    proc = spikewatch(
        "check-config", str(path), env={"SPIKEWATCH_SERVER__API_TOKEN": "api-token-value-xyz"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "super-secret-jwt-key-value" not in proc.stdout + proc.stderr
    assert "api-token-value-xyz" not in proc.stdout + proc.stderr
    # A token may ride in the URL query too: its value is masked.
    assert "url-token-456" not in proc.stdout
    assert "***" in proc.stdout
    target = yaml.safe_load(proc.stdout)["targets"][0]
    assert target["name"] == "t"
    assert target["url"] == "wss://example.test/ws?token=***"


def test_version() -> None:
    """--version prints the package version."""
    proc = spikewatch("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("spikewatch ")
