"""A run result as a person reads it on a terminal.

Every line is passed through :func:`~spikewatch.core.redact.printable`: the details
quote the target's own text, which must neither drive the terminal nor forge a line,
and a line is at most :data:`~spikewatch.core.redact.LINE_LIMIT` characters.
"""

from __future__ import annotations

from spikewatch.core.redact import printable
from spikewatch.core.result import RunResult
from spikewatch.core.stats import LatencySummary


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"


def _dist(label: str, summary: LatencySummary | None) -> str:
    if summary is None:
        return f"  {label:<11} n/a"
    return (
        f"  {label:<11} p50 {_ms(summary.p50)}  p95 {_ms(summary.p95)}  "
        f"p99 {_ms(summary.p99)}  max {_ms(summary.max)}  (n={summary.count})"
    )


def _outcomes(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in outcomes.items()) or "none"


def format_summary(result: RunResult) -> str:
    """Return a short, aligned summary of one run."""
    lines = [
        f"{result.scenario} → {result.target}: {result.result.value.upper()} "
        f"in {result.duration:.2f}s (run {result.id})"
    ]
    if result.message:
        lines.append(f"  {result.message}")
    b = result.baseline
    lines.append(f"  {'baseline':<11} {b.ok}/{b.probes} ok, B = {_ms(b.latency)}")
    if result.stable is not None:
        s = result.stable
        lines.append(
            f"  {'stable':<11} {s.opened}/{s.connections} open, {s.dropped} dropped"
            + (f" ({s.drop_example})" if s.drop_example else "")
        )
    if result.spike is not None:
        sp = result.spike
        ratio = sp.success_ratio
        share = "" if ratio is None else f" ({ratio:.1%} ok)"
        lines.append(f"  {'spike':<11} {sp.attempted} attempted: {_outcomes(sp.outcomes)}{share}")
        if sp.churn is not None:
            c = sp.churn
            lines.append(
                f"  {'churn':<11} {c.rate:g}/s offered, {c.achieved_rate:.1f}/s started, "
                f"over {c.duration:g}s, at most {c.peak_in_flight} open at once"
            )
        lines.append(_dist("handshake", sp.handshake))
        if sp.first_message is not None:
            lines.append(_dist("welcome", sp.first_message))
        if sp.message_rtt is not None:
            lines.append(_dist("echo rtt", sp.message_rtt))
        lines.append(_dist("lateness", sp.start_lateness))
    if result.recovery is not None:
        r = result.recovery
        if r.recovered and r.seconds is not None:
            what = f"recovered after {r.seconds:.3f}s"
        else:
            what = f"did not recover within {r.timeout:g}s"
        lines.append(
            f"  {'recovery':<11} {what} ({r.probes} probes, good ≤ {_ms(r.good_limit)}: "
            f"{_outcomes(r.outcomes)})"
        )
    for check in result.thresholds:
        mark = "ok  " if check.passed else "FAIL"
        value = "n/a" if check.value is None else f"{check.value:g}"
        lines.append(f"  {'threshold':<11} {mark} {check.name} = {value} (limit {check.limit:g})")
    p = result.prober
    cpu = "n/a" if p.cpu_percent is None else f"{p.cpu_percent:.0f}%"
    rss = "n/a" if p.rss_bytes is None else f"{p.rss_bytes / 1e6:.0f} MB"
    lines.append(
        f"  {'prober':<11} loop lag p99 {_ms(p.loop_lag_p99)}, CPU {cpu} during the spike, "
        f"RSS {rss}" + (" — SATURATED" if p.saturated else "")
    )
    lines.extend(
        f"  {'error':<11} {g.outcome.value} x{g.count} (first in {g.phase.value}): {g.example}"
        for g in result.errors
    )
    return "\n".join(printable(line) for line in lines)
