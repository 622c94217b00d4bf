"""Count and own every open connection, so that limits hold and shutdown closes them all."""

from __future__ import annotations

from typing import Protocol

from spikewatch.core.budget import PROBE_RESERVE
from spikewatch.protocol.receive_budget import DEFAULT_RECEIVE_BUDGET_BYTES, ReceiveBudget

__all__ = ["PROBE_RESERVE", "Closable", "ConnectionRegistry"]


class Closable(Protocol):
    """Anything the registry can close at shutdown."""

    def abort(self) -> None:
        """Close at once, without a closing handshake."""


class ConnectionRegistry:
    """The one place that knows how many connections are open, across all runs.

    ``limits.max_connections`` is enforced here: a connection that cannot get a slot is
    not attempted (outcome ``aborted``) rather than queued, because a queued spike is no
    longer the spike that was asked for.
    """

    __slots__ = ("_live", "_open", "full", "limit", "peak", "receive_budget")

    def __init__(
        self,
        limit: int,
        *,
        full: str | None = None,
        receive_budget_bytes: int = DEFAULT_RECEIVE_BUDGET_BYTES,
        receive_budget_named: str = "",
    ) -> None:
        self.limit = limit
        #: The bytes all connections together may hold in partial messages (a worker's
        #: budget is named as its share: ``receive_budget_named``).
        self.receive_budget = ReceiveBudget(receive_budget_bytes, receive_budget_named)
        #: Why an attempt gets no slot, when not the daemon's own limit (a worker's budget).
        self.full = full
        self._open = 0
        self.peak = 0
        self._live: set[Closable] = set()

    def full_reason(self, reserve: int = 0) -> str:
        """Say why :meth:`try_acquire` refused a slot: the detail of an ``aborted`` attempt."""
        if self.full is not None:
            return self.full
        kept = f", {reserve} kept for probes" if reserve else ""
        return f"limits.max_connections={self.limit} reached{kept}"

    @property
    def open(self) -> int:
        """Slots in use now (connections being opened or open)."""
        return self._open

    def try_acquire(self, reserve: int = 0) -> bool:
        """Take a slot if one is free, leaving ``reserve`` slots untouched."""
        if self._open + reserve >= self.limit:
            return False
        self._open += 1
        self.peak = max(self.peak, self._open)
        return True

    def release(self) -> None:
        """Give a slot back."""
        self._open -= 1

    def track(self, conn: Closable) -> None:
        """Remember a live connection so that :meth:`abort_all` can reach it."""
        self._live.add(conn)

    def forget(self, conn: Closable) -> None:
        """Forget a connection that is gone."""
        self._live.discard(conn)

    def abort_all(self) -> int:
        """Close every live connection now; return how many there were."""
        live = list(self._live)
        for conn in live:
            conn.abort()
        return len(live)
