"""What was measured of one connection attempt."""

from __future__ import annotations

from dataclasses import dataclass

from spikewatch.core.outcomes import Outcome, Phase


@dataclass(slots=True)
class Attempt:
    """One connection attempt and what was measured of it (monotonic seconds).

    ``handshake`` is connect start → upgrade complete, ``first_message`` upgrade complete →
    welcome, ``rtt`` echo sent → echo received, ``latency`` connect start → end of the last
    expectation (the probe latency that baseline and recovery compare).
    """

    phase: Phase
    conn: int
    planned: float | None = None
    started: float | None = None
    ended: float | None = None
    outcome: Outcome | None = None
    detail: str = ""
    status: int | None = None
    handshake: float | None = None
    first_message: float | None = None
    rtt: float | None = None
    latency: float | None = None
    #: The step a failed attempt was in: connect, upgrade, welcome or echo, or the name
    #: of its conversation step (None when it succeeded or was never made), so that a
    #: timeout says what it timed out on. Conversation step names come from the config
    #: only, so the set of values stays bounded.
    step: str | None = None

    def decide(self, outcome: Outcome, detail: str, now: float, step: str | None = None) -> bool:
        """Record how the attempt ended; the first decision stands, later ones are ignored.

        Every writer of an outcome goes through here, so an attempt ends in exactly one
        outcome whichever path (a frame, a timer, a cancel, a lost worker) ends it first.
        Return whether this call decided it.
        """
        if self.outcome is not None:
            return False
        self.outcome = outcome
        self.detail = detail
        self.ended = now
        if outcome != Outcome.OK:
            self.step = step
        return True

    def void(self, detail: str, now: float) -> None:
        """Replace whatever was recorded by an ``error``: the measurements were lost (a
        worker that died before it reported its share), so none of them stands."""
        self.outcome = None
        self.started = self.handshake = self.first_message = None
        self.rtt = self.latency = self.status = None
        self.decide(Outcome.ERROR, detail, now)

    def abort(self, now: float, detail: str) -> None:
        """Record that this attempt was not made because a safety limit stopped it."""
        self.decide(Outcome.ABORTED, detail, now)

    @property
    def lateness(self) -> float | None:
        """Actual minus planned start, when both are known."""
        if self.planned is None or self.started is None:
            return None
        return self.started - self.planned
