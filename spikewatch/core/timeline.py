"""A run's timeline as it is kept in its detail: what the target did over time (issue 14).

Pure data; built once from the run's record by :func:`spikewatch.core.report.build_timeline`:
each baseline and recovery probe's start and latency (or outcome), the spike's batch
starts, T0 and the recovery instant, the stable connections' drops and keepalive round
trips, and the spike attempts' handshake latencies as a fixed log-bucket histogram plus
a capped sample. Instants are seconds since the run's start.

The size is bounded whatever the scenario: at most :data:`PROBES_KEPT` probes per phase
(the first and last halves when there are more, with the count left out),
:data:`BATCHES_KEPT` batch starts, :data:`DROPS_KEPT` drop instants,
:data:`SAMPLE_KEPT` handshake samples and ``len(HANDSHAKE_EDGES) + 1`` bucket counts:
under 100 KB of JSON (:data:`MAX_JSON_BYTES`, checked by the tests).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from spikewatch.core.stats import LatencySummary

__all__ = [
    "BATCHES_KEPT",
    "DROPS_KEPT",
    "HANDSHAKE_EDGES",
    "MAX_JSON_BYTES",
    "PROBES_KEPT",
    "SAMPLE_KEPT",
    "LatencyHistogram",
    "ProbePoint",
    "RunTimeline",
]

#: Probes kept per phase (baseline, recovery): the first half and the last half.
PROBES_KEPT: Final = 600
#: Batch (or ramp step) starts kept, the first ones.
BATCHES_KEPT: Final = 200
#: Stable connection drop instants kept, the first ones.
DROPS_KEPT: Final = 100
#: Spike handshake latencies kept as (start, seconds) pairs, evenly strided in plan order.
SAMPLE_KEPT: Final = 256
#: Upper bounds (seconds) of the handshake histogram's buckets, 1-2-5 per decade; one more
#: bucket counts what is slower than the last.
HANDSHAKE_EDGES: Final = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0,
)  # fmt: skip
#: The most a timeline's JSON form takes, whatever the run (the bounds above, generously).
MAX_JSON_BYTES: Final = 100_000


def _r(value: float) -> float:
    return round(value, 6)


@dataclass(frozen=True, slots=True)
class ProbePoint:
    """One baseline or recovery probe: when it started, its latency, or how it failed."""

    phase: str
    at: float
    latency: float | None
    outcome: str

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        latency = None if self.latency is None else _r(self.latency)
        return {"phase": self.phase, "at": _r(self.at), "latency": latency, "outcome": self.outcome}


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Counts of latencies per bucket: ``counts[i]`` are those ≤ ``edges[i]`` (and above
    the edge before); ``counts[-1]`` those above the last edge."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @classmethod
    def of(
        cls, values: Iterable[float], edges: Sequence[float] = HANDSHAKE_EDGES
    ) -> LatencyHistogram:
        """Count ``values`` into the buckets bounded by ``edges`` (ascending)."""
        counts = [0] * (len(edges) + 1)
        for value in values:
            counts[bisect.bisect_left(edges, value)] += 1
        return cls(tuple(edges), tuple(counts))

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"edges_seconds": list(self.edges), "counts": list(self.counts)}


@dataclass(frozen=True, slots=True)
class RunTimeline:
    """What the target did over the run, bounded in size (see the module's doc)."""

    probes: tuple[ProbePoint, ...]
    probes_left_out: int = 0
    batch_starts: tuple[float, ...] = ()
    batches: int = 0
    t0: float | None = None
    recovered_at: float | None = None
    good_limit: float | None = None
    stable_drops: tuple[float, ...] = ()
    stable_dropped: int = 0
    keepalive: LatencySummary | None = None
    handshake: LatencyHistogram | None = None
    handshake_sample: tuple[tuple[float, float], ...] = ()
    handshake_measured: int = 0
    handshake_failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON form (the run detail's ``timeline``)."""
        keepalive = None
        if self.keepalive is not None:
            keepalive = {"count": self.keepalive.count, **self.keepalive.as_dict()}
        return {
            "probes": [p.as_dict() for p in self.probes],
            "probes_left_out": self.probes_left_out,
            "batch_starts": [_r(b) for b in self.batch_starts],
            "batches": self.batches,
            "t0": None if self.t0 is None else _r(self.t0),
            "recovered_at": None if self.recovered_at is None else _r(self.recovered_at),
            "good_latency_limit_seconds": None if self.good_limit is None else _r(self.good_limit),
            "stable": {
                "dropped": self.stable_dropped,
                "drops_at": [_r(d) for d in self.stable_drops],
                "keepalive_rtt_seconds": keepalive,
            },
            "spike_handshake": {
                "measured": self.handshake_measured,
                "failed": self.handshake_failed,
                "histogram": None if self.handshake is None else self.handshake.as_dict(),
                "sample": [[_r(at), _r(s)] for at, s in self.handshake_sample],
            },
        }
