"""The bytes every connection together may hold in messages that are not complete yet.

``max_message_bytes`` bounds one message; nothing bounds many. 400 connections each
holding an unfinished 1 MiB message took the prober from 57 to 481 MiB (issue 12), past
the 512 MiB its Kubernetes manifests allow. One budget, shared by every connection of
the process, bounds the sum: a connection whose buffers would take it past the budget is
failed, and that failure is the prober's limit, never the target's.
"""

from __future__ import annotations

from spikewatch.core.classify import RECEIVE_BUFFERS_FULL
from spikewatch.errors import SpikewatchError

#: The default budget: a few hundred partial messages of the default 1 MiB limit, or
#: thousands of small ones, within the container's memory (deploy/README.md).
DEFAULT_RECEIVE_BUDGET_BYTES = 64 * 1024 * 1024


class ReceiveBudgetError(SpikewatchError):
    """Holding a connection's partial message would take every buffer past the budget."""


class ReceiveBudget:
    """A count of the bytes held in partial messages, against a limit; no I/O."""

    __slots__ = ("held", "limit", "named", "peak", "refused")

    def __init__(self, limit: int = DEFAULT_RECEIVE_BUDGET_BYTES, named: str = "") -> None:
        self.limit = limit
        #: How a refusal names the limit, when it is not the whole configured one (a
        #: worker's share of it); empty: ``limits.max_receive_buffer_bytes=<limit>``.
        self.named = named
        self.held = 0
        self.peak = 0
        #: How many times a connection was refused more bytes.
        self.refused = 0

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes, or raise :class:`ReceiveBudgetError` and hold nothing."""
        held = self.held + n
        if held > self.limit:
            self.refused += 1
            raise ReceiveBudgetError(self.explain())
        self.held = held
        self.peak = max(self.peak, held)

    def give(self, n: int) -> None:
        """Give ``n`` bytes back."""
        self.held -= n

    def explain(self) -> str:
        """The detail of an attempt this budget refused: the prober's limit, named."""
        return explain(self.limit, self.named)


def explain(limit: int, named: str = "") -> str:
    """The detail of an attempt failed for want of receive buffer: the prober's limit
    (``named`` when given, else the configured setting at ``limit``)."""
    return (
        f"{RECEIVE_BUFFERS_FULL} ({named or f'limits.max_receive_buffer_bytes={limit}'}): "
        "partial messages of other connections hold them; raise the limit or lower "
        "max_message_bytes"
    )
