"""Recent runs, newest first: a ring in memory, backed by the run store.

The ring holds the runs of this process (live state: queued, running, done) for the
status page and the scheduler's "last result"; every run is also written to the store
(:mod:`spikewatch.daemon.run_store`: a SQLite file under ``storage.path``, or memory), and
the API pages over the store, with the ring's live state laid over the rows it has.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from spikewatch.config.durations import MAX_SECONDS
from spikewatch.core.result import RunResult
from spikewatch.daemon.run_store import AsyncRunStore, RunFilter, RunPage, RunStore

log = logging.getLogger(__name__)

RunState = Literal["queued", "running", "done", "cancelled"]


@dataclass(slots=True)
class RunEntry:
    """One requested or scheduled run: queued, running, or done with its result."""

    id: str
    target: str
    scenario: str
    trigger: Literal["schedule", "api"]
    queued_at: float
    state: RunState = "queued"
    started_at: float | None = None
    result: RunResult | None = None
    #: The wall-clock slot of a scheduled run in a sharded deployment (epoch seconds).
    slot: float | None = None
    #: Why a run never finished (it was cancelled).
    reason: str | None = None

    def as_dict(self, *, detail: bool = False) -> dict[str, Any]:
        """Return the JSON form: the run result once done, else its state."""
        if self.result is not None:
            doc = self.result.as_dict()
            if not detail:
                doc.pop("detail", None)
            doc["state"] = self.state
            doc["trigger"] = self.trigger
            return doc
        return {
            "id": self.id,
            "target": self.target,
            "scenario": self.scenario,
            "state": self.state,
            "trigger": self.trigger,
            "result": None,
            **({"reason": self.reason} if self.reason is not None else {}),
        }


class RunHistory:
    """The last ``capacity`` runs, newest first, findable by id."""

    def __init__(self, capacity: int = 200, store: AsyncRunStore | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be ≥ 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, RunEntry] = OrderedDict()
        #: Where every run is written; without one, a store in memory of ``capacity`` runs.
        self.store = store or AsyncRunStore(RunStore(None, max_runs=capacity, max_age=MAX_SECONDS))

    def add(self, entry: RunEntry) -> None:
        """Remember a new run, forgetting the oldest past the capacity; queue its write."""
        self._entries[entry.id] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        doc = entry.as_dict(detail=True)
        future = self.store.submit(self.store.store.put, doc, entry.queued_at)
        future.add_done_callback(lambda f: _log_failed_write(f, entry.id))

    async def save(self, entry: RunEntry, doc: dict[str, Any] | None = None) -> bool:
        """Write a run's document (``doc``, or its form now); False (logged) when that failed.

        A failed write never fails the run: it is still reported from memory.
        """
        doc = entry.as_dict(detail=True) if doc is None else doc
        try:
            await self.store.call(self.store.store.put, doc, at=entry.queued_at)
        except Exception as exc:  # noqa: BLE001 - any failure of the disk, reported the same way
            log.error("run %s not written to the run history: %s", entry.id, exc)  # noqa: TRY400
            return False
        return True

    async def cancel_unfinished(self, reason: str) -> list[RunEntry]:
        """Record every run without a result as it ends (the daemon stops); return the cancelled.

        A queued or running run becomes ``cancelled`` with ``reason`` (unless it has one);
        one that crashed (done without a result) is written as it is.
        """
        cancelled = []
        for entry in list(self._entries.values()):
            if entry.result is not None:
                continue
            if entry.state != "done":
                entry.state = "cancelled"
                entry.reason = entry.reason or reason
                cancelled.append(entry)
            await self.save(entry)
        return cancelled

    async def find(self, run_id: str) -> dict[str, Any] | None:
        """Return a run's document with its detail: live from memory, else from the store."""
        entry = self._entries.get(run_id)
        if entry is not None:
            return entry.as_dict(detail=True)
        return await self.store.call(self.store.store.get, run_id)

    async def page(self, where: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        """Return a page of stored runs, newest first; ValueError for a cursor not ours."""
        found = await self.store.call(self.store.store.page, where, limit=limit, cursor=cursor)
        runs = []
        for doc in found.runs:
            entry = self._entries.get(doc["id"])
            runs.append(entry.as_dict() if entry is not None else _without_detail(doc))
        return RunPage(runs, found.next_cursor)

    def close(self) -> None:
        """Finish the queued writes and close the store."""
        self.store.close()

    def recent(
        self, *, target: str | None = None, scenario: str | None = None, limit: int = 50
    ) -> list[RunEntry]:
        """Return up to ``limit`` runs, newest first, optionally of one target/scenario."""
        out: list[RunEntry] = []
        for entry in reversed(self._entries.values()):
            if target is not None and entry.target != target:
                continue
            if scenario is not None and entry.scenario != scenario:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    def last_result(self, target: str, scenario: str) -> RunResult | None:
        """Return the newest finished result of a target/scenario pair."""
        for entry in reversed(self._entries.values()):
            if entry.target == target and entry.scenario == scenario and entry.result:
                return entry.result
        return None


def _without_detail(doc: dict[str, Any]) -> dict[str, Any]:
    doc.pop("detail", None)
    return doc


def _log_failed_write(future: concurrent.futures.Future[None], run_id: str) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("run %s not written to the run history: %s", run_id, exc)
