"""Recent runs, newest first, in a ring that cannot grow without bound."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from spikewatch.core.result import RunResult

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
        }


class RunHistory:
    """The last ``capacity`` runs, newest first, findable by id."""

    def __init__(self, capacity: int = 200) -> None:
        if capacity < 1:
            raise ValueError("capacity must be ≥ 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, RunEntry] = OrderedDict()

    def add(self, entry: RunEntry) -> None:
        """Remember a new run, forgetting the oldest past the capacity."""
        self._entries[entry.id] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, run_id: str) -> RunEntry | None:
        """Return the run with this id, if it is still remembered."""
        return self._entries.get(run_id)

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
