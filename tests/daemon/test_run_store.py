"""The run store alone, on a file in tmp_path: schema, retention, pages, broken files."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from spikewatch.config import StorageConfig
from spikewatch.daemon.history import RunEntry, RunHistory
from spikewatch.daemon.lifecycle import STOPPED_REASON, open_run_store
from spikewatch.daemon.run_store import (
    DB_NAME,
    MEMORY_MAX_RUNS,
    SCHEMA_VERSION,
    AsyncRunStore,
    RunFilter,
    RunStore,
    StoreError,
    decode_cursor,
    encode_cursor,
)
from spikewatch.errors import ConfigError
from tests.daemon.fakes import finished_result, finished_run

DAY = 86400.0


def doc(
    run_id: str,
    *,
    target: str = "t",
    scenario: str = "s",
    state: str = "done",
    result: str | None = "passed",
) -> dict[str, Any]:
    return {
        "id": run_id,
        "target": target,
        "scenario": scenario,
        "state": state,
        "result": result,
        "detail": {"timeline_seconds": {"t0": 1.5}},
    }


def store_in(path: Path, *, max_runs: int = 100, max_age: float = 30 * DAY) -> RunStore:
    return RunStore(path, max_runs=max_runs, max_age=max_age)


def test_a_new_store_has_the_schema_in_wal_mode(tmp_path: Path) -> None:
    """A new database gets the current schema version, WAL journaling, and keeps a run."""
    store = store_in(tmp_path / "state")
    assert store.schema_version == SCHEMA_VERSION
    assert store.file == tmp_path / "state" / DB_NAME
    mode = sqlite3.connect(store.file).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.put(doc("a"), time.time())
    store.close()
    again = store_in(tmp_path / "state")
    assert again.get("a") == doc("a")
    assert again.get("nope") is None
    again.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A file whose schema is newer than this spikewatch's is refused with a clear error."""
    store_in(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    newer = (
        rf"schema version {SCHEMA_VERSION + 1} is newer than this spikewatch's \({SCHEMA_VERSION}\)"
    )
    with pytest.raises(StoreError, match=newer):
        store_in(tmp_path)


def test_a_version_1_database_is_migrated_and_its_runs_still_answer(tmp_path: Path) -> None:
    """A file of schema 1 (no summary column) is migrated; its old rows page and answer
    as before, new rows page without their detail."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(
        "CREATE TABLE runs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " target TEXT NOT NULL, scenario TEXT NOT NULL, state TEXT NOT NULL, result TEXT,"
        " at REAL NOT NULL, doc TEXT NOT NULL);"
        "CREATE INDEX runs_at ON runs (at);"
        "CREATE INDEX runs_pair ON runs (target, scenario, seq);"
        "PRAGMA user_version = 1;"
    )
    db.execute(
        "INSERT INTO runs (id, target, scenario, state, result, at, doc) VALUES (?,?,?,?,?,?,?)",
        ("old", "t", "s", "done", "passed", time.time(), json.dumps(doc("old"))),
    )
    db.commit()
    db.close()
    store = store_in(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.get("old") == doc("old")
        store.put(doc("new"), time.time())
        assert store.get("new") == doc("new")
        runs = store.page(RunFilter(), limit=10).runs
        assert [r["id"] for r in runs] == ["new", "old"]
        assert "detail" not in runs[0]  # the summary
        assert runs[1] == doc("old")  # a version 1 row: its whole document
    finally:
        store.close()


def test_a_corrupt_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A file that is not a database stops the start with the file's name, as a config error."""
    (tmp_path / DB_NAME).write_bytes(b"this is not a database, not at all" * 200)
    with pytest.raises(ConfigError) as caught:
        open_run_store(StorageConfig(path=tmp_path))
    text = str(caught.value)
    assert "storage.path" in text
    assert str(tmp_path / DB_NAME) in text
    assert "not a usable database" in text


def test_an_unusable_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A storage.path that is a file (no directory can be made there) names the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot open") as caught:
        open_run_store(StorageConfig(path=blocker / "sub"))
    assert str(blocker / "sub" / DB_NAME) in str(caught.value)


def test_a_read_only_directory_is_a_config_error_naming_the_file() -> None:
    """A storage.path no process may create a file in (procfs: even root cannot) names it,
    and with storage.fallback: memory the history goes to memory instead."""
    read_only = Path("/proc/self")
    assert read_only.is_dir()
    with pytest.raises(ConfigError, match="cannot open") as caught:
        open_run_store(StorageConfig(path=read_only))
    assert str(read_only / DB_NAME) in str(caught.value)
    store = open_run_store(StorageConfig(path=read_only, fallback="memory"))
    assert store.file is None
    store.close()


def test_fallback_memory_logs_an_unusable_database_and_keeps_the_history_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With storage.fallback: memory, a corrupt file is logged (named) and memory is used."""
    (tmp_path / DB_NAME).write_bytes(b"this is not a database, not at all" * 200)
    with caplog.at_level(logging.ERROR, logger="spikewatch.daemon.lifecycle"):
        store = open_run_store(StorageConfig(path=tmp_path, fallback="memory"))
    try:
        assert store.file is None
        assert store.max_runs == MEMORY_MAX_RUNS
        store.put(doc("r1"), time.time())
        assert store.get("r1") == doc("r1")
    finally:
        store.close()
    (record,) = caplog.records
    message = record.getMessage()
    assert str(tmp_path / DB_NAME) in message
    assert "not a usable database" in message
    assert "kept in memory only (the last 200 runs) and is lost at the next restart" in message
    # The file is left as it was, for whoever looks into it.
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"this is not a database")


def test_fallback_is_none_or_memory() -> None:
    """storage.fallback defaults to none (the error stays) and refuses anything else."""
    assert StorageConfig().fallback == "none"
    with pytest.raises(ValidationError):
        StorageConfig.model_validate({"fallback": "disk"})


def test_retention_by_count_keeps_the_newest(tmp_path: Path) -> None:
    """Past max_runs, the oldest runs are forgotten after each write."""
    store = store_in(tmp_path, max_runs=3)
    now = time.time()
    for i in range(5):
        store.put(doc(f"r{i}"), now)
    page = store.page(RunFilter(), limit=10)
    assert [d["id"] for d in page.runs] == ["r4", "r3", "r2"]
    store.close()


def test_retention_by_age_forgets_old_runs(tmp_path: Path) -> None:
    """Runs accepted longer than max_age ago are forgotten; newer ones stay."""
    store = store_in(tmp_path, max_age=DAY)
    now = time.time()
    store.put(doc("old"), now - 2 * DAY)
    assert store.get("old") is None  # pruned by its own write
    store.put(doc("recent"), now - DAY / 2)
    assert store.prune(now + DAY) == 1
    assert store.get("recent") is None
    store.close()


def test_a_store_in_memory_keeps_at_most_200_runs() -> None:
    """Without a path the history lives in memory, capped whatever max_runs says."""
    store = RunStore(None, max_runs=10_000, max_age=DAY)
    assert store.file is None
    assert store.max_runs == MEMORY_MAX_RUNS
    store.close()


def test_pages_follow_the_cursor_and_filters(tmp_path: Path) -> None:
    """Pages go newest first, the cursor continues where a page ended, filters combine."""
    store = store_in(tmp_path)
    base = time.time() - 100
    for i in range(7):
        store.put(
            doc(f"r{i}", target="a" if i % 2 else "b", result="failed" if i == 3 else "passed"),
            base + i,
        )
    first = store.page(RunFilter(), limit=3)
    assert [d["id"] for d in first.runs] == ["r6", "r5", "r4"]
    assert first.next_cursor is not None
    second = store.page(RunFilter(), limit=3, cursor=first.next_cursor)
    assert [d["id"] for d in second.runs] == ["r3", "r2", "r1"]
    assert second.next_cursor is not None
    last = store.page(RunFilter(), limit=3, cursor=second.next_cursor)
    assert [d["id"] for d in last.runs] == ["r0"]
    assert last.next_cursor is None
    assert [d["id"] for d in store.page(RunFilter(target="a"), limit=10).runs] == [
        "r5",
        "r3",
        "r1",
    ]
    failed = store.page(RunFilter(target="a", scenario="s", result="failed"), limit=10)
    assert [d["id"] for d in failed.runs] == ["r3"]
    window = store.page(RunFilter(since=base + 2, until=base + 4), limit=10)
    assert [d["id"] for d in window.runs] == ["r3", "r2"]
    store.close()


@pytest.mark.parametrize("cursor", ["", "!!", "cjE", "eDE", "cjEyMzQ1Njc4OTAxMjM0NTY3ODkw"])
def test_a_cursor_we_did_not_make_is_refused(cursor: str) -> None:
    """Cursors are opaque: anything but one the store made is a ValueError."""
    if cursor == "cjE":
        assert decode_cursor(cursor) == 1  # the one valid form here
        return
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor(cursor)


def test_a_cursor_round_trips() -> None:
    """encode_cursor and decode_cursor are inverse."""
    assert decode_cursor(encode_cursor(12345)) == 12345


def test_runs_left_unfinished_are_cancelled_with_the_reason(tmp_path: Path) -> None:
    """Opening the store marks runs a stopped daemon left queued or running as cancelled."""
    store = store_in(tmp_path)
    store.put(doc("q", state="queued", result=None), time.time())
    store.put(doc("d"), time.time())
    store.close()
    reopened = open_run_store(StorageConfig(path=tmp_path))
    cancelled = reopened.get("q")
    assert cancelled is not None
    assert cancelled["state"] == "cancelled"
    assert cancelled["reason"] == STOPPED_REASON
    assert reopened.get("d") == doc("d")
    assert reopened.cancel_unfinished(STOPPED_REASON) == []
    reopened.close()


async def test_the_async_store_runs_calls_in_order_off_the_loop(tmp_path: Path) -> None:
    """A queued write lands before a later awaited read; close finishes queued writes."""
    wrapped = AsyncRunStore(store_in(tmp_path))
    wrapped.submit(wrapped.store.put, doc("a"), time.time())
    assert await wrapped.call(wrapped.store.get, "a") == doc("a")
    wrapped.submit(wrapped.store.put, doc("b"), time.time())
    wrapped.close()
    again = store_in(tmp_path)
    assert again.get("b") == doc("b")
    again.close()


async def test_a_full_disk_is_logged_and_the_run_still_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write that fails mid-run (the disk is full) is logged; the run answers from memory."""
    store = store_in(tmp_path)
    # A database capped at the pages it has now: a run that needs a new page (any run with
    # a long message) fails with SQLITE_FULL.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    history = RunHistory(10, AsyncRunStore(store))
    entry = finished_run(finished_result(run_id="x", message="refused " * 2000))
    history.add(entry)
    assert await history.save(entry) is False
    assert await history.find("x") == entry.as_dict(detail=True)
    failures = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert failures == ["run x not written to the run history: database or disk is full"] * 2
    history.close()


async def test_stopping_records_runs_without_a_result(tmp_path: Path) -> None:
    """Queued and running runs are written cancelled with the reason; a crashed one as it is."""
    history = RunHistory(10, AsyncRunStore(store_in(tmp_path)))
    done = finished_run(finished_result(run_id="done"))
    entries = [
        done,
        RunEntry("queued", "t", "s", "api", time.time()),
        RunEntry("running", "t", "s", "schedule", time.time(), state="running"),
        RunEntry("crashed", "t", "s", "schedule", time.time(), state="done"),
        RunEntry("dropped", "t", "s", "schedule", time.time(), "cancelled", reason="left"),
    ]
    for entry in entries:
        history.add(entry)
    cancelled = await history.cancel_unfinished(STOPPED_REASON)
    assert [e.id for e in cancelled] == ["queued", "running", "dropped"]
    history.close()
    stored = store_in(tmp_path)
    states = {e.id: stored.get(e.id) for e in entries}
    assert states["done"] == done.as_dict(detail=True)
    for run_id, reason in (
        ("queued", STOPPED_REASON),
        ("running", STOPPED_REASON),
        ("dropped", "left"),
    ):
        row = states[run_id]
        assert row is not None
        assert (row["state"], row["reason"], row["result"]) == ("cancelled", reason, None)
    crashed = states["crashed"]
    assert crashed is not None
    assert (crashed["state"], crashed["result"]) == ("done", None)
    assert "reason" not in crashed
    stored.close()
