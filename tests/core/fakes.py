"""Small hand-written stand-ins for what the engine hands to the core."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Health:
    """A process's figures, as a monitor window or a worker's health report gives them."""

    loop_lag_p99: float | None
    cpu_percent: float | None
    cpu_window: float
    rss_bytes: int
