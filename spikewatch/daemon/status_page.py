"""The status page: one server-rendered HTML page, readable at a glance, with no script.

Rendering is pure: it takes what the daemon knows now (and the time) and returns HTML,
every value passed through :func:`html.escape`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Final
from urllib.parse import quote

from spikewatch.core.result import RunResult
from spikewatch.daemon.history import RunEntry
from spikewatch.daemon.state import ScheduledPair

__all__ = ["PAGE_STYLE", "absolute_time", "badge", "pair_href", "render_status_page", "run_href"]

#: Seconds between the browser's reloads of the page.
REFRESH_SECONDS: Final = 10

_STYLE: Final = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; background: #f6f8fa; margin: 0; }
main { max-width: 1440px; margin: 0 auto; padding: 16px 24px 32px; }
header { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap;
         border-bottom: 1px solid #d0d7de; padding-bottom: 8px; }
h1 { font-size: 24px; margin: 0; }
h2 { font-size: 18px; margin: 24px 0 8px; }
.version, .muted, time + .muted { color: #59636e; }
.small { font-size: 13px; }
table { border-collapse: collapse; width: 100%; background: #fff;
        border: 1px solid #d0d7de; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #d8dee4;
         vertical-align: top; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #f9fafb; }
time { white-space: nowrap; }
.url { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
         font-size: 13px; color: #fff; background: #59636e; white-space: nowrap; }
.ready { background: #1a7f37; }
.not-ready { background: #cf222e; }
.passed { background: #1a7f37; }
.failed { background: #cf222e; }
.target_down { background: #82071e; }
.aborted { background: #bc4c00; }
.invalid { background: #6e7781; }
.error { background: #8250df; }
.queued, .running { background: #fff; color: #0969da; border: 1px solid #0969da; }
.none { background: #fff; color: #59636e; border: 1px solid #d0d7de; }
a { color: #0969da; }
footer { margin-top: 24px; }
footer a { margin-right: 16px; }
"""


#: The stylesheet every page of the daemon shares (inline: the CSP allows no other).
PAGE_STYLE: Final = _STYLE


def run_href(run_id: str) -> str:
    """Return the run page's path of a run, escaped for an attribute."""
    return escape(f"/runs/{quote(run_id, safe='')}", quote=True)


def pair_href(target: str, scenario: str) -> str:
    """Return the page's path of a target-scenario pair, escaped for an attribute."""
    path = f"/targets/{quote(target, safe='')}/{quote(scenario, safe='')}"
    return escape(path, quote=True)


def render_status_page(
    *,
    version: str,
    ready: bool,
    pairs: Sequence[ScheduledPair],
    runs: Sequence[RunEntry],
    target_urls: Mapping[str, str],
    now: float,
) -> str:
    """Return the status page: readiness, every target-scenario pair, recent runs.

    ``target_urls`` maps target names to URLs already safe to show; ``runs`` come newest
    first; ``now`` is the wall-clock time the relative times are measured from.
    """
    readiness = (
        '<span class="badge ready">ready</span>'
        if ready
        else '<span class="badge not-ready">not ready</span>'
        ' <span class="muted">config not loaded or scheduler not up</span>'
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spikewatch {escape(version)}</title>
<style>{_STYLE}</style>
</head>
<body>
<main>
<header>
<h1>spikewatch</h1>
<span class="version">version {escape(version)}</span>
{readiness}
<span class="muted small">as of {_absolute(now)}, refreshed every {REFRESH_SECONDS}s</span>
</header>
<h2>Targets and scenarios</h2>
{_pairs_table(pairs, target_urls, now)}
<h2>Recent runs <span class="muted small">newest first</span></h2>
{_runs_table(runs, now)}
<footer class="small">
<a href="/metrics">/metrics</a>
<a href="/api/v1/targets">/api/v1/targets</a>
<a href="/api/v1/runs">/api/v1/runs</a>
<a href="/healthz">/healthz</a>
<a href="/readyz">/readyz</a>
</footer>
</main>
</body>
</html>
"""


def _pairs_table(pairs: Sequence[ScheduledPair], target_urls: Mapping[str, str], now: float) -> str:
    head = _head(
        "Target",
        "Scenario",
        "Schedule",
        "Now",
        "Next run",
        "Last result",
        "Spike ok",
        "Recovery",
        "Last run",
    )
    if not pairs:
        return _table(head, ['<tr><td colspan="9" class="muted">no pairs configured</td></tr>'])
    rows = []
    for pair in pairs:
        url = target_urls.get(pair.target)
        url_line = f'<br><span class="url muted small">{escape(url)}</span>' if url else ""
        last = pair.last
        pair_page = pair_href(pair.target, pair.scenario)
        rows.append(
            "<tr>"
            f"<td><strong>{escape(pair.target)}</strong>{url_line}</td>"
            f'<td><a href="{pair_page}">{escape(pair.scenario)}</a></td>'
            f"<td>{escape(pair.schedule)}</td>"
            f"<td>{_badge(pair.state) if pair.state != 'idle' else escape(pair.state)}</td>"
            f"<td>{_when(pair.next_run, now, missing='not scheduled')}</td>"
            f"<td>{_result_cell(last)}{_version_line(last)}</td>"
            f'<td class="num">{_spike_ratio(last)}</td>'
            f'<td class="num">{_recovery(last)}</td>'
            f"<td>{_when(_finished(last), now, missing='never')}</td>"
            "</tr>"
        )
    return _table(head, rows)


def _runs_table(runs: Sequence[RunEntry], now: float) -> str:
    head = _head(
        "Run", "Target", "Version", "Scenario", "Trigger", "Result", "Started", "Duration",
        "Spike ok", "Recovery", "Message",
    )  # fmt: skip
    if not runs:
        return _table(head, ['<tr><td colspan="11" class="muted">no runs yet</td></tr>'])
    rows = []
    for entry in runs:
        result = entry.result
        started = result.started_at if result is not None else entry.started_at
        duration = f"{result.duration:.1f} s" if result is not None else "—"
        message = result.message if result is not None else ""
        rows.append(
            "<tr>"
            f'<td><a href="{run_href(entry.id)}">{escape(entry.id)}</a></td>'
            f"<td>{escape(entry.target)}</td>"
            f"<td>{_version(result)}</td>"
            f"<td>{escape(entry.scenario)}</td>"
            f"<td>{escape(entry.trigger)}</td>"
            f"<td>{_badge(result.result.value) if result is not None else _badge(entry.state)}</td>"
            f"<td>{_when(started, now, missing='not started')}</td>"
            f'<td class="num">{duration}</td>'
            f'<td class="num">{_spike_ratio(result)}</td>'
            f'<td class="num">{_recovery(result)}</td>'
            f'<td class="small">{escape(message)}</td>'
            "</tr>"
        )
    return _table(head, rows)


def _head(*names: str) -> str:
    return "<tr>" + "".join(f'<th scope="col">{escape(n)}</th>' for n in names) + "</tr>"


def _table(head: str, rows: Sequence[str]) -> str:
    body = "\n".join(rows)
    return (
        f'<div class="scroll"><table>\n<thead>{head}</thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def badge(kind: str) -> str:
    """Return a result's (or a state's) badge."""
    return _badge(kind)


def absolute_time(timestamp: float) -> str:
    """Return a ``<time>`` element of an instant, in UTC."""
    return _absolute(timestamp)


def _badge(kind: str) -> str:
    # The class comes from a fixed vocabulary, but escape it like any other value.
    return f'<span class="badge {escape(kind, quote=True)}">{escape(kind)}</span>'


def _result_cell(result: RunResult | None) -> str:
    if result is None:
        return '<span class="badge none">no run yet</span>'
    return _badge(result.result.value)


def _version(result: RunResult | None) -> str:
    """The target version the run measured (issue 17); the reason when it is unknown."""
    if result is None or result.target_version is None:
        return '<span class="muted">—</span>'
    reason = result.target_version_reason
    title = f' title="{escape(reason, quote=True)}"' if reason else ""
    return f'<span class="version"{title}>{escape(result.target_version)}</span>'


def _version_line(result: RunResult | None) -> str:
    if result is None or result.target_version is None:
        return ""
    return f'<br><span class="muted small">version {_version(result)}</span>'


def _finished(result: RunResult | None) -> float | None:
    return None if result is None else result.started_at + result.duration


def _spike_ratio(result: RunResult | None) -> str:
    if result is None or result.spike is None or result.spike.success_ratio is None:
        return "—"
    spike = result.spike
    ok = spike.outcomes.get("ok", 0)
    return f'{spike.success_ratio:.1%} <span class="muted small">({ok}/{spike.attempted})</span>'


def _recovery(result: RunResult | None) -> str:
    if result is None or result.recovery is None:
        return "—"
    recovery = result.recovery
    if recovery.recovered and recovery.seconds is not None:
        return f"{recovery.seconds:.2f} s"
    return f"not within {recovery.timeout:g} s"


def _when(timestamp: float | None, now: float, *, missing: str) -> str:
    if timestamp is None:
        return f'<span class="muted">{escape(missing)}</span>'
    relative = escape(_relative(timestamp, now))
    return f'{relative}<br><span class="muted small">{_absolute(timestamp)}</span>'


def _absolute(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    iso = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    shown = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{escape(iso, quote=True)}">{escape(shown)}</time>'


def _relative(timestamp: float, now: float) -> str:
    delta = timestamp - now
    if abs(delta) < 1:
        return "now"
    span = _span(abs(delta))
    return f"in {span}" if delta > 0 else f"{span} ago"


def _span(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
