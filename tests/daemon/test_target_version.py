"""The target version in the stored history, the API, the status page, compare, and metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from spikewatch.cli import main
from spikewatch.core.result import RunResult
from spikewatch.daemon.compare import format_comparison, stored_comparison
from spikewatch.daemon.metrics import SpikewatchMetrics
from spikewatch.daemon.run_store import DB_NAME, RunFilter, RunStore
from spikewatch.engine.runner import RunReport
from tests.builders import write_config
from tests.daemon.conftest import Client
from tests.daemon.fakes import NOW, FakeDaemonState, finished_result, finished_run, status_page

DAY = 86400.0

#: The schema-1 table, as a store before issue 17 wrote it.
SCHEMA_1 = """
CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, target TEXT NOT NULL,
    scenario TEXT NOT NULL, state TEXT NOT NULL, result TEXT, at REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX runs_at ON runs (at);
CREATE INDEX runs_pair ON runs (target, scenario, seq);
PRAGMA user_version = 1;
"""


def run_doc(
    run_id: str,
    version: str | None,
    recovery: float = 1.0,
    *,
    target: str = "t",
    scenario: str = "s",
    started: float = NOW,
    ratio: float = 1.0,
) -> dict[str, Any]:
    """Return a finished run's stored document of a target version."""
    recovered = not math.isinf(recovery)
    result = finished_result(
        target,
        scenario,
        run_id=run_id,
        started_at=started,
        recovery_seconds=recovery if recovered else None,
    )
    doc = dataclasses.replace(result, target_version=version).as_dict()
    doc["spike"]["success_ratio"] = ratio
    return {**doc, "state": "done", "trigger": "schedule"}


def store_in(path: Path) -> RunStore:
    return RunStore(path, max_runs=1000, max_age=30 * DAY)


# --- the store --------------------------------------------------------------------------


def test_a_schema_1_file_is_migrated_and_its_versions_filled_in(tmp_path: Path) -> None:
    """Opening a file of schema 1 adds the version column, filled from each run's JSON."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(SCHEMA_1)
    for seq, version in enumerate(["1.0", None]):
        doc = run_doc(f"r{seq}", version)
        db.execute(
            "INSERT INTO runs (id, target, scenario, state, result, at, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc["id"], "t", "s", "done", "passed", NOW + seq, json.dumps(doc)),
        )
    db.commit()
    db.close()
    store = store_in(tmp_path)
    assert store.schema_version == 3
    page = store.page(RunFilter(version="1.0"), limit=10)
    assert [d["id"] for d in page.runs] == ["r0"]
    store.close()


def test_runs_are_filtered_by_version(tmp_path: Path) -> None:
    """version= keeps the runs that measured that version, with the other filters."""
    store = store_in(tmp_path)
    for i, version in enumerate(["1.0", "2.0", "1.0", None]):
        store.put(run_doc(f"r{i}", version), NOW + i)
    assert [d["id"] for d in store.page(RunFilter(version="1.0"), limit=10).runs] == ["r2", "r0"]
    assert [d["id"] for d in store.page(RunFilter(target="t", version="2.0"), limit=10).runs] == [
        "r1"
    ]
    store.close()


def test_current_versions_follow_the_last_change(tmp_path: Path) -> None:
    """Each target's last known version, first seen after the version before it; unknown
    and unversioned runs neither count as a version nor end its streak."""
    store = store_in(tmp_path)
    sequence = [("a", "1.0"), ("a", "2.0"), ("a", "unknown"), ("a", "2.0"), ("b", "1.0"),
                ("b", "2.0"), ("b", "1.0"), ("b", None), ("c", "unknown")]  # fmt: skip
    for i, (target, version) in enumerate(sequence):
        store.put(run_doc(f"r{i}", version, target=target, started=NOW + 60 * i), NOW + i)
    found = store.current_versions()
    assert found == {
        "a": ("2.0", run_doc("r1", "2.0", started=NOW + 60)["started_at"]),
        "b": ("1.0", run_doc("r6", "1.0", started=NOW + 360)["started_at"]),
    }
    store.close()


def test_compare_on_stored_runs_with_known_distributions(tmp_path: Path) -> None:
    """From stored runs: a version twice as slow is different; two alike are not."""
    rng = random.Random(3)
    store = store_in(tmp_path)
    i = 0
    for version, factor in (("1.0", 1.0), ("1.1", 1.0), ("2.0", 2.0)):
        for _ in range(10):
            store.put(run_doc(f"r{i}", version, factor * rng.uniform(2.0, 3.0)), NOW + i)
            i += 1
    store.put(run_doc("other-scenario", "2.0", 1.0, scenario="x"), NOW + i)
    slower = stored_comparison(store, "t", "s", "2.0", "1.0").as_dict()
    recovery = slower["figures"]["recovery_seconds"]
    assert recovery["verdict"] == "different"
    assert (recovery["version"]["runs"], recovery["against"]["runs"]) == (10, 10)
    alike = stored_comparison(store, "t", "s", "1.1", "1.0")
    assert alike.as_dict()["figures"]["recovery_seconds"]["verdict"] == "not_different"
    text = format_comparison(stored_comparison(store, "t", "s", "2.0", "1.0"))
    assert "recovery_seconds" in text
    assert "DIFFERENT (p < 0.05)" in text
    assert "within the run-to-run spread" in format_comparison(alike)
    store.close()


# --- the CLI ----------------------------------------------------------------------------


def cli_config(tmp_path: Path, storage: bool = True) -> Path:
    document: dict[str, Any] = {
        "targets": [{"name": "t", "url": "ws://127.0.0.1:1/ws"}],
        "scenarios": [{"name": "s", "spike": {"connections": 5}}],
    }
    if storage:
        document["storage"] = {"path": str(tmp_path / "history")}
    return write_config(tmp_path / "config.yaml", document)


def test_the_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """spikewatch compare reads the stored runs and prints the verdict, or the JSON."""
    config = cli_config(tmp_path)
    store = store_in(tmp_path / "history")
    for i in range(5):
        store.put(run_doc(f"a{i}", "1.0", 1.0 + i / 10), NOW + i)
        store.put(run_doc(f"b{i}", "2.0", 5.0 + i / 10), NOW + 10 + i)
    store.close()
    argv = ["compare", "--config", str(config), "--target", "t", "--scenario", "s"]
    assert main([*argv, "--version", "2.0", "--against", "1.0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("t / s: version 2.0 against 1.0")
    assert "recovery_seconds: median 5.2 (worst 5.4, 5 runs) against 1.2 (worst 1.4, 5 runs)" in out
    assert main([*argv, "--version", "2.0", "--against", "1.0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["figures"]["recovery_seconds"]["verdict"] == "different"


def test_compare_without_a_history_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without storage.path there is nothing to compare: exit 2, saying what to set."""
    config = cli_config(tmp_path, storage=False)
    argv = ["compare", "--config", str(config), "--target", "t", "--scenario", "s"]
    assert main([*argv, "--version", "2", "--against", "1"]) == 2
    assert "set storage.path" in capsys.readouterr().err


def test_compare_with_an_unusable_history_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A history that cannot be opened: exit 2 naming storage.path."""
    config = cli_config(tmp_path)
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / DB_NAME).write_bytes(b"not a database at all" * 100)
    argv = ["compare", "--config", str(config), "--target", "t", "--scenario", "s"]
    assert main([*argv, "--version", "2", "--against", "1"]) == 2
    assert "storage.path" in capsys.readouterr().err


# --- the API and the status page ----------------------------------------------------------


def versioned(run_id: str, version: str, recovery: float) -> RunResult:
    result = finished_result(run_id=run_id, recovery_seconds=recovery)
    return dataclasses.replace(result, target_version=version)


async def test_the_api_filters_and_compares_by_version(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /api/v1/runs?version= and GET /api/v1/compare answer from the stored runs."""
    for i in range(4):
        state.history.add(finished_run(versioned(f"old{i}", "1.0", 1.0 + i / 10)))
        state.history.add(finished_run(versioned(f"new{i}", "2.0", 4.0 + i / 10)))
    answer = await client.get("/api/v1/runs", params={"version": "2.0"})
    assert answer.status == 200
    runs = (await answer.json())["runs"]
    assert [r["id"] for r in runs] == ["new3", "new2", "new1", "new0"]
    assert {r["target_version"] for r in runs} == {"2.0"}
    params = {"target": "chat-staging", "scenario": "avalanche", "version": "2.0", "against": "1.0"}
    compared = await (await client.get("/api/v1/compare", params=params)).json()
    recovery = compared["figures"]["recovery_seconds"]
    assert recovery["verdict"] == "different"
    assert recovery["p_value"] == pytest.approx(2 / 70, abs=1e-6)
    missing = await client.get("/api/v1/compare", params={"target": "chat-staging"})
    assert missing.status == 400
    assert "missing: scenario, version, against" in (await missing.json())["error"]


def test_the_status_page_shows_each_runs_version() -> None:
    """The runs table has the version (its reason as a title when unknown); pairs show it too."""
    state = FakeDaemonState()
    state.history.add(finished_run(versioned("v1", "1.4.2", 1.0)))
    unknown = dataclasses.replace(
        finished_result(run_id="v2"),
        target_version="unknown",
        target_version_reason="url /v: <404>",
    )
    state.history.add(finished_run(unknown))
    page = status_page(state)
    assert '<span class="version">1.4.2</span>' in page
    assert 'version <span class="version" title=' in page  # the pair's last run
    assert '<span class="version" title="url /v: &lt;404&gt;">unknown</span>' in page


# --- metrics -----------------------------------------------------------------------------


def info(metrics: SpikewatchMetrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["target"], s.labels["version"]): s.value
        for family in metrics.registry.collect()
        if family.name == "spikewatch_target_info"
        for s in family.samples
    }


def changed_at(metrics: SpikewatchMetrics, target: str) -> float | None:
    return metrics.registry.get_sample_value(
        "spikewatch_target_version_change_timestamp_seconds", {"target": target}
    )


def test_target_info_follows_the_version_without_leaving_the_old_series() -> None:
    """One series per target: a new version replaces the old one and moves the change time;
    the same version again, or an unknown one after a known one, changes nothing."""
    metrics = SpikewatchMetrics(version="test")
    metrics.ensure_pairs([("t", "s", []), ("u", "s", [])])
    metrics.set_target_version("t", "unknown", 10.0)
    assert info(metrics) == {("t", "unknown"): 1.0}
    metrics.set_target_version("t", "1.0", 20.0)
    metrics.set_target_version("t", "1.0", 30.0)
    metrics.set_target_version("t", "unknown", 40.0)
    assert info(metrics) == {("t", "1.0"): 1.0}
    assert changed_at(metrics, "t") == 20.0
    metrics.set_target_version("t", "2.0", 50.0)
    metrics.set_target_version("u", "9", 60.0)
    assert info(metrics) == {("t", "2.0"): 1.0, ("u", "9"): 1.0}
    assert changed_at(metrics, "t") == 50.0
    # A reload that drops target u removes its series; one that drops t's version: too.
    metrics.sync_pairs([("t", "s", [])])
    assert info(metrics) == {("t", "2.0"): 1.0}
    assert changed_at(metrics, "u") is None
    metrics.keep_versions(set())
    assert info(metrics) == {}


def test_a_run_sets_the_version_and_a_restart_restores_it(tmp_path: Path) -> None:
    """record_run sets target_info from the run; a new process gets it back from the store."""
    metrics = SpikewatchMetrics(version="test")
    metrics.ensure_pairs([("chat-staging", "avalanche", [])])
    report = RunReport(versioned("r1", "3.0", 1.0))
    metrics.record_run(report)
    assert info(metrics) == {("chat-staging", "3.0"): 1.0}
    assert changed_at(metrics, "chat-staging") == report.result.started_at

    store = store_in(tmp_path)
    store.put(run_doc("a", "1.0", target="chat-staging", started=NOW), NOW)
    store.put(run_doc("b", "3.0", target="chat-staging", started=NOW + 60), NOW + 1)
    store.put(run_doc("c", "5.0", target="gone", started=NOW + 60), NOW + 2)
    restarted = SpikewatchMetrics(version="test")
    restarted.ensure_pairs([("chat-staging", "avalanche", [])])
    restarted.restore_versions(store.current_versions())
    store.close()
    assert info(restarted) == {("chat-staging", "3.0"): 1.0}
    assert changed_at(restarted, "chat-staging") == pytest.approx(NOW + 60, abs=0.001)


def test_runs_without_a_version_leave_target_info_alone() -> None:
    """A target without version: in its config exports no target_info."""
    metrics = SpikewatchMetrics(version="test")
    metrics.ensure_pairs([("chat-staging", "avalanche", [])])
    metrics.record_run(RunReport(finished_result()))
    assert info(metrics) == {}


def test_check_config_shows_the_version_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The effective config names the version's JSON path json, as the user writes it."""
    document = {
        "targets": [
            {
                "name": "t",
                "url": "ws://127.0.0.1:1/ws",
                "version": {"url": "http://127.0.0.1:1/v?token=abc", "json": "build.version"},
            }
        ],
        "scenarios": [{"name": "s", "spike": {"connections": 5}}],
    }
    assert main(["check-config", str(write_config(tmp_path / "c.yaml", document))]) == 0
    out = capsys.readouterr().out
    assert "json: build.version" in out
    assert "json_path" not in out
    assert "abc" not in out  # the version URL's query is masked like the target's
