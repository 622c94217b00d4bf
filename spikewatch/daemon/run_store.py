"""The run history on disk: one SQLite database (the standard library's ``sqlite3``).

:class:`RunStore` is synchronous and owns one connection; the daemon uses it through
:class:`AsyncRunStore`, which runs every call on one dedicated thread. One thread, not
``asyncio.to_thread``: a connection belongs to one thread, the calls run in the order
they were made (a run's "queued" row is written before its "done" row), and a slow disk
holds up that thread only, never the event loop.

The schema has a version (``PRAGMA user_version``) and a list of migrations; a database
from a newer spikewatch is refused rather than guessed at. Each row keeps the run's JSON
document (the API's form, with its detail and timeline: tens of KB), its summary (the
same without the detail: what a page of the list needs, a few hundred bytes; version 2)
and the columns the list filters on.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from spikewatch.errors import SpikewatchError

__all__ = [
    "DB_NAME",
    "SCHEMA_VERSION",
    "AsyncRunStore",
    "RunFilter",
    "RunPage",
    "RunStore",
    "StoreError",
    "decode_cursor",
    "encode_cursor",
]

#: The database's file name in ``storage.path``.
DB_NAME: Final = "runs.sqlite3"
#: Runs kept by a store without a file (``storage.path`` unset), whatever max_runs says.
MEMORY_MAX_RUNS: Final = 200

_T = TypeVar("_T")

# Migration n takes a database from version n - 1 to version n.
_MIGRATIONS: Final[Sequence[str]] = (
    """
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        target TEXT NOT NULL,
        scenario TEXT NOT NULL,
        state TEXT NOT NULL,
        result TEXT,
        at REAL NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX runs_at ON runs (at);
    CREATE INDEX runs_pair ON runs (target, scenario, seq);
    """,
    # 2: the document without its detail, so that a page of the list does not read and
    # parse every run's timeline (rows from version 1 have none: their doc is read).
    """
    ALTER TABLE runs ADD COLUMN summary TEXT;
    """,
    # 3: the target's version each run measured (issue 17), filled in for stored runs.
    """
    ALTER TABLE runs ADD COLUMN version TEXT;
    UPDATE runs SET version = json_extract(doc, '$.target_version');
    CREATE INDEX runs_version ON runs (target, version, seq);
    """,
)

#: The schema this spikewatch writes.
SCHEMA_VERSION: Final = len(_MIGRATIONS)


class StoreError(SpikewatchError):
    """The run history cannot be opened or used; the message names the file."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What a page of runs is restricted to; None matches everything."""

    target: str | None = None
    scenario: str | None = None
    result: str | None = None
    #: Accepted at or after / before this instant (epoch seconds).
    since: float | None = None
    until: float | None = None
    #: The target version the run measured (``target_version``).
    version: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    """Runs newest first, and the cursor of the next (older) page, if there is one."""

    runs: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    """Return the opaque cursor that continues after the row ``seq``."""
    return base64.urlsafe_b64encode(f"r{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Return the row a cursor continues after; raise ValueError for one we did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor from this API") from None
    if not (text.startswith("r") and text[1:].isascii() and text[1:].isdigit()):
        raise ValueError("not a cursor from this API")
    if len(text) > 20:
        raise ValueError("not a cursor from this API")
    return int(text[1:])


class RunStore:
    """Runs in one SQLite database: ``path``/runs.sqlite3, or memory when ``path`` is None."""

    def __init__(self, path: Path | None, *, max_runs: int, max_age: float) -> None:
        self.file = None if path is None else path / DB_NAME
        self.max_runs = max_runs if path is not None else min(max_runs, MEMORY_MAX_RUNS)
        self.max_age = max_age
        self._db = self._open()

    def _fail(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"run history {self.file or ':memory:'}: {what}: {exc}")

    def _open(self) -> sqlite3.Connection:
        try:
            if self.file is not None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                str(self.file) if self.file is not None else ":memory:",
                isolation_level=None,  # autocommit; transactions are explicit
                check_same_thread=False,  # AsyncRunStore hands it to its own thread
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._fail("cannot open", exc) from None
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            if self.file is not None:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA quick_check").fetchone()
            self._migrate(db)
        except sqlite3.Error as exc:
            db.close()
            raise self._fail("not a usable database (corrupt or unwritable?)", exc) from None
        except StoreError:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run history {self.file}: schema version {version} is newer than this"
                f" spikewatch's ({SCHEMA_VERSION}); run a newer spikewatch or move the file away"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            # One transaction: the tables and the version that says they are there.
            script = _MIGRATIONS[number - 1]
            db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")

    @property
    def schema_version(self) -> int:
        """The version of the schema in the file."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def put(self, doc: dict[str, Any], at: float) -> None:
        """Write (or rewrite) one run's document, then apply the retention."""
        with self._db:  # a transaction: BEGIN ... COMMIT
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO runs (id, target, scenario, state, result, at, doc, summary, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state, result = excluded.result,"
                " doc = excluded.doc, summary = excluded.summary, version = excluded.version",
                (
                    doc["id"],
                    doc["target"],
                    doc["scenario"],
                    doc["state"],
                    doc.get("result"),
                    at,
                    _text(doc),
                    _summary(doc),
                    doc.get("target_version"),
                ),
            )
        self.prune()

    def prune(self, now: float | None = None) -> int:
        """Forget runs past ``max_runs`` or older than ``max_age``; return how many."""
        cutoff = (time.time() if now is None else now) - self.max_age
        with self._db:
            self._db.execute("BEGIN")
            old = self._db.execute("DELETE FROM runs WHERE at < ?", (cutoff,)).rowcount
            extra = self._db.execute(
                "DELETE FROM runs WHERE seq <= (SELECT seq FROM runs ORDER BY seq DESC"
                " LIMIT 1 OFFSET ?)",
                (self.max_runs,),
            ).rowcount
        return int(old + extra)

    def get(self, run_id: str) -> dict[str, Any] | None:
        """Return one run's document, with its detail."""
        row = self._db.execute("SELECT doc FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _doc(row[0])

    def page(self, where: RunFilter, *, limit: int, cursor: str | None = None) -> RunPage:
        """Return up to ``limit`` runs newest first, after ``cursor``; ValueError on a bad one.

        The runs come without their detail (a row written by schema version 1 may still
        have it).
        """
        clauses: list[str] = []
        args: list[object] = []
        if cursor is not None:
            clauses.append("seq < ?")
            args.append(decode_cursor(cursor))
        for column in ("target", "scenario", "result", "version"):
            value = getattr(where, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.since is not None:
            clauses.append("at >= ?")
            args.append(where.since)
        if where.until is not None:
            clauses.append("at < ?")
            args.append(where.until)
        sql = "SELECT seq, COALESCE(summary, doc) FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return RunPage(
            [_doc(text) for _, text in rows], encode_cursor(rows[-1][0]) if more else None
        )

    def last_finished(self, target: str, scenario: str) -> dict[str, Any] | None:
        """Return the newest run of a pair that has a result, if one is stored."""
        row = self._db.execute(
            "SELECT doc FROM runs WHERE target = ? AND scenario = ? AND result IS NOT NULL"
            " ORDER BY seq DESC LIMIT 1",
            (target, scenario),
        ).fetchone()
        return None if row is None else _doc(row[0])

    def finished_of_version(
        self, target: str, scenario: str, version: str, *, limit: int
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` newest runs of a pair with a result, of one target version."""
        rows = self._db.execute(
            "SELECT doc FROM runs WHERE target = ? AND version = ? AND scenario = ?"
            " AND result IS NOT NULL ORDER BY seq DESC LIMIT ?",
            (target, version, scenario, limit),
        ).fetchall()
        return [_doc(text) for (text,) in rows]

    def current_versions(self) -> dict[str, tuple[str, str]]:
        """Return each target's last known version and the ``started_at`` of its first run
        since the version before it (or of its first stored run): what
        ``spikewatch_target_info`` and the version-change timestamp say after a restart."""
        found: dict[str, tuple[str, str]] = {}
        latest = self._db.execute(
            "SELECT target, version FROM runs AS r WHERE seq = (SELECT MAX(seq) FROM runs"
            " WHERE target = r.target AND version IS NOT NULL AND version != 'unknown')"
        ).fetchall()
        for target, version in latest:
            row = self._db.execute(
                "SELECT doc FROM runs WHERE target = ? AND version = ? AND seq > COALESCE("
                "(SELECT MAX(seq) FROM runs WHERE target = ? AND version IS NOT NULL"
                " AND version NOT IN (?, 'unknown')), 0) ORDER BY seq LIMIT 1",
                (target, version, target, version),
            ).fetchone()
            found[target] = (version, _doc(row[0])["started_at"])
        return found

    def cancel_unfinished(self, reason: str) -> list[dict[str, Any]]:
        """Mark the runs still queued or running (a daemon stopped) cancelled; return them."""
        with self._db:
            self._db.execute("BEGIN")
            rows = self._db.execute(
                "SELECT id, doc FROM runs WHERE state IN ('queued', 'running') ORDER BY seq"
            ).fetchall()
            docs = []
            for run_id, text in rows:
                doc = _doc(text)
                doc["state"] = "cancelled"
                doc["reason"] = reason
                self._db.execute(
                    "UPDATE runs SET state = 'cancelled', doc = ?, summary = ? WHERE id = ?",
                    (_text(doc), _summary(doc), run_id),
                )
                docs.append(doc)
        return docs


def _text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))


def _summary(doc: dict[str, Any]) -> str:
    return _text({k: v for k, v in doc.items() if k != "detail"})


def _doc(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc


class AsyncRunStore:
    """A :class:`RunStore` whose calls run on one thread of their own, in call order."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="run-store")

    def submit(self, call: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        """Queue a call without waiting for it (its order among the others is kept)."""
        return self._thread.submit(call, *args)

    async def call(self, call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run a call on the store's thread and wait for it without blocking the loop."""
        future = self._thread.submit(lambda: call(*args, **kwargs))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Finish the queued calls, then close the database."""
        self._thread.submit(self.store.close)
        self._thread.shutdown(wait=True)
