"""Hold a run's stable connections open through the spike, and count those it loses.

They are opened before the spike and kept alive (ping or echo every ``ping_interval``)
until the run closes them: a connection the target drops meanwhile counts against
``thresholds.dropped_stable``. One the prober closed itself, for want of receive buffer
(limits.max_receive_buffer_bytes), is no drop: it is counted apart (``lost_to_prober``)
and makes the run invalid.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from spikewatch.config import StableConfig
from spikewatch.core.attempt import Attempt
from spikewatch.core.classify import lost_to_prober
from spikewatch.core.outcomes import Outcome, Phase
from spikewatch.core.phases import StablePhase
from spikewatch.engine.connection import ClientConnection, Keepalive, losses, open_connection
from spikewatch.engine.inflight import RunInFlight
from spikewatch.engine.registry import PROBE_RESERVE, ConnectionRegistry
from spikewatch.engine.spec import ConnectionSpec


class StableConnections:
    """One run's stable connections: their attempts, those open, their message round trips."""

    def __init__(self, run: RunInFlight, config: StableConfig, *, echo: bool) -> None:
        self.run = run
        self.config = config
        # auto: the target's keepalive message (its keepalive, else its echo) when it has
        # one, ping otherwise.
        self.mode: Literal["ping", "echo"] = "echo" if echo else "ping"
        if config.mode != "auto":
            self.mode = config.mode
        self.attempts: tuple[Attempt, ...] = ()
        self.conns: list[ClientConnection] = []
        self.rtts: list[float] = []

    async def open(self, spec: ConnectionSpec, registry: ConnectionRegistry) -> None:
        """Open every stable connection and keep those that succeeded."""
        cfg = self.config
        keepalive = Keepalive(cfg.ping_interval, cfg.timeout, self.mode, self.rtts.append)
        self.run.mark("stable_start")

        async def open_one(attempt: Attempt) -> None:
            conn = await open_connection(
                spec, attempt, registry, keepalive=keepalive, reserve=PROBE_RESERVE
            )
            # By outcome, not is_open: a peer that closes in the same read as its welcome
            # has already moved the connection on, and that loss must still be counted.
            if conn is not None and attempt.outcome == Outcome.OK:
                self.conns.append(conn)

        new_attempt = self.run.new_attempt
        self.attempts = tuple(new_attempt(Phase.STABLE) for _ in range(cfg.connections))
        await asyncio.gather(*(self.run.spawn(open_one(a)) for a in self.attempts))
        self.run.mark("stable_open")
        self.run.progress(
            f"stable: {len(self.conns)}/{cfg.connections} open, "
            f"{self.mode} every {cfg.ping_interval:g}s"
        )

    def record(self) -> StablePhase:
        """Return the phase's record, once the run has closed its connections."""
        lost = losses(self.conns)
        return StablePhase(
            connections=self.config.connections,
            attempts=self.attempts,
            rtts=tuple(self.rtts),
            dropped=lost.dropped,
            drop_example=lost.example,
            unanswered=sum(1 for c in self.conns if c.lost_at is None and c.keepalive_unanswered),
            drops=tuple(
                at
                for c in self.conns
                if (at := c.lost_at) is not None and not lost_to_prober(c.lost_reason)
            ),
            lost_to_prober=lost.to_prober,
        )
