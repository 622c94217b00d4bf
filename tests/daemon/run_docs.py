"""A stored run's document with a known timeline, for the run page's tests.

The numbers are chosen so that the chart's geometry can be computed by hand: B = 5 ms,
the good-probe limit 11 ms, the spike from 2.5 s to T0 at 4 s, recovery declared at 5.5 s.
"""

from __future__ import annotations

from typing import Any, Final

from spikewatch.core.timeline import HANDSHAKE_EDGES

#: (phase, start, latency or None for a timeout) of every probe of the known run.
PROBES: Final = (
    ("baseline", 0.0, 0.004),
    ("baseline", 0.5, 0.005),
    ("baseline", 1.0, 0.004),
    ("baseline", 1.5, 0.006),
    ("baseline", 2.0, 0.005),
    ("recovery", 4.0, None),
    ("recovery", 4.5, 0.040),
    ("recovery", 5.0, 0.020),
    ("recovery", 5.5, 0.006),
    ("recovery", 6.0, 0.005),
    ("recovery", 6.5, 0.005),
)
SPIKE_START: Final = 2.5
T0: Final = 4.0
RECOVERED_AT: Final = 5.5
LIMIT: Final = 0.011
DURATION: Final = 7.0


def known_run_doc(
    run_id: str = "r-known", target: str = "chat-staging", scenario: str = "avalanche", **extra: Any
) -> dict[str, Any]:
    """Return the known run's document, as the API answers it with its detail."""
    counts = [0] * (len(HANDSHAKE_EDGES) + 1)
    counts[HANDSHAKE_EDGES.index(0.002)] = 10
    counts[HANDSHAKE_EDGES.index(0.005)] = 12
    counts[HANDSHAKE_EDGES.index(0.05)] = 2
    doc: dict[str, Any] = {
        "id": run_id,
        "target": target,
        "scenario": scenario,
        "result": "failed",
        "message": "missed: handshake_p95",
        "started_at": "2026-11-24T09:58:00.000Z",
        "duration_seconds": DURATION,
        "baseline": {"probes": 5, "ok": 5, "outcomes": {"ok": 5}, "latency_seconds": 0.005},
        "spike": {
            "attempted": 25,
            "outcomes": {"ok": 24, "timeout": 1},
            "success_ratio": 0.96,
            "aborted": False,
            "handshake_seconds": {"p50": 0.003, "p95": 0.045, "p99": 0.049, "max": 0.05},
            "first_message_seconds": None,
            "message_rtt_seconds": None,
            "start_lateness_seconds": None,
            "held_dropped": 0,
            "held_drop_example": None,
        },
        "stable": {
            "connections": 2,
            "opened": 2,
            "dropped": 1,
            "outcomes": {"ok": 2},
            "message_rtt_seconds": {"p50": 0.001, "p95": 0.002, "p99": 0.002, "max": 0.002},
            "drop_example": "closed by the target: 1001 going away",
            "unanswered_at_end": 0,
        },
        "recovery": {
            "recovered": True,
            "seconds": RECOVERED_AT - T0,
            "probes": 6,
            "outcomes": {"ok": 5, "timeout": 1},
            "good_latency_limit_seconds": LIMIT,
            "timeout_seconds": 120.0,
        },
        "thresholds": [
            {"name": "success_ratio", "limit": 0.9, "value": 0.96, "passed": True},
            {"name": "handshake_p95", "limit": 0.02, "value": 0.045, "passed": False},
            {"name": "recovery", "limit": 60.0, "value": 1.5, "passed": True},
            {"name": "dropped_stable", "limit": 1, "value": 1, "passed": True},
            {"name": "recovered", "limit": 1.0, "value": 1.0, "passed": True},
        ],
        "prober": {
            "saturated": False,
            "loop_lag_p99_seconds": 0.001,
            "cpu_percent": 20.0,
            "rss_bytes": 1,
            "reasons": [],
        },
        "errors": [
            {
                "outcome": "timeout",
                "count": 2,
                "example": "no upgrade answer within 5s",
                "phase": "spike",
                "step": "upgrade",
            }
        ],
        "state": "done",
        "trigger": "api",
        "detail": {
            "upgrade_statuses": {},
            "timeline_seconds": {"baseline_start": 0.0, "spike_start": SPIKE_START, "t0": T0},
            "timeline": {
                "probes": [
                    {
                        "phase": phase,
                        "at": at,
                        "latency": latency,
                        "outcome": "ok" if latency is not None else "timeout",
                    }
                    for phase, at, latency in PROBES
                ],
                "probes_left_out": 0,
                "batch_starts": [2.5, 3.0, 3.5],
                "batches": 3,
                "t0": T0,
                "recovered_at": RECOVERED_AT,
                "good_latency_limit_seconds": LIMIT,
                "stable": {
                    "dropped": 1,
                    "drops_at": [3.2],
                    "keepalive_rtt_seconds": {
                        "count": 12,
                        "p50": 0.001,
                        "p95": 0.002,
                        "p99": 0.002,
                        "max": 0.002,
                    },
                },
                "spike_handshake": {
                    "measured": 24,
                    "failed": 1,
                    "histogram": {"edges_seconds": list(HANDSHAKE_EDGES), "counts": counts},
                    "sample": [[2.5, 0.002], [3.0, 0.004]],
                },
            },
        },
    }
    doc.update(extra)
    return doc
