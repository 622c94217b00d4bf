"""The run page and the page of a target-scenario pair: server-rendered HTML, no script.

Rendering is pure, like the status page's: it takes stored run documents (the API's JSON,
already redacted when the run was built) and returns HTML in which every value from a
run or the config went through :func:`html.escape`. The charts are inline SVG
(:mod:`spikewatch.daemon.charts`), so the pages need nothing but themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any, Final

from spikewatch.daemon.charts import (
    COLORS,
    TrendPoint,
    handshake_histogram,
    latency_chart,
    trend_chart,
)
from spikewatch.daemon.status_page import PAGE_STYLE, absolute_time, badge, pair_href, run_href

__all__ = ["render_missing_page", "render_pair_page", "render_run_page"]

_EXTRA_STYLE: Final = """
.chart { width: 100%; height: auto; max-width: 960px; display: block; background: #fff;
         border: 1px solid #d0d7de; }
.chart .tick { font-size: 11px; fill: #59636e; }
.chart .axis-name { font-size: 12px; fill: #1f2328; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 6px 0; font-size: 13px; }
.key { display: inline-block; width: 12px; height: 12px; border-radius: 6px;
       vertical-align: -1px; margin-right: 4px; }
.verdict { font-size: 17px; margin: 12px 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 8px 0; }
dl.facts dt { color: #59636e; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
ul.checks { padding-left: 20px; }
.met { color: #1a7f37; font-weight: 600; }
.missed { color: #cf222e; font-weight: 600; }
code.example { white-space: pre-wrap; overflow-wrap: anywhere; }
@media (max-width: 600px) {
  main { padding: 8px 10px 24px; } h1 { font-size: 20px; }
  /* The charts shrink to about half their size: draw their text and marks larger. */
  .chart .tick, .chart .axis-name { font-size: 18px; }
  .chart circle.probe, .chart circle.run { r: 8px; }
  .chart line.limit, .chart line.t0, .chart line.recovered { stroke-width: 4; }
  .chart .frame { stroke-width: 2.5; }
  .chart path.failed { stroke-width: 5; }
}
"""

_VERDICTS: Final = {
    "passed": "Passed: the target took the spike and recovered within every threshold.",
    "failed": "Failed: the target missed at least one threshold.",
    "target_down": "Target down: the baseline found the target down, so no spike was fired.",
    "aborted": "Aborted: the spike was stopped by the abort rule.",
    "invalid": "Invalid: the prober itself was saturated, so the figures do not describe the"
    " target.",
    "error": "Error: the run itself failed.",
}


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{PAGE_STYLE}{_EXTRA_STYLE}</style>
</head>
<body>
<main>
{body}
<footer class="small"><a href="/">status page</a><a href="/api/v1/runs">/api/v1/runs</a></footer>
</main>
</body>
</html>
"""


def _instant(text: object) -> str:
    if not isinstance(text, str):
        return '<span class="muted">—</span>'
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return escape(text)
    return absolute_time(moment.timestamp())


def _ms(seconds: object) -> str:
    return f"{float(seconds) * 1000:.2f} ms" if isinstance(seconds, int | float) else "—"


def _check_words(check: Mapping[str, Any], recovery: Mapping[str, Any] | None) -> str:
    """Say one threshold check in words: what was measured, what was allowed, met or not."""
    name, limit, value = str(check.get("name")), check.get("limit"), check.get("value")
    verdict = '<span class="met">met</span>' if check.get("passed") else (
        '<span class="missed">missed</span>'
    )  # fmt: skip
    measured = value is not None
    if name == "success_ratio":
        got = f"{value:.1%}" if measured else "not measured"
        words = f"spike success ratio {got}, at least {limit:.1%} needed"
    elif name.endswith("_p95"):
        what = name.removesuffix("_p95").replace("_", " ")
        got = _ms(value) if measured else "not measured"
        words = f"{what} p95 {got}, at most {_ms(limit)} allowed"
    elif name == "recovery":
        got = f"{value:.2f} s" if measured else "no recovery"
        words = f"recovery {got}, at most {limit:g} s allowed"
    elif name in {"dropped_stable", "dropped_held"}:
        what = "stable" if name == "dropped_stable" else "held spike"
        words = f"{value:g} {what} connections dropped, at most {limit:g} allowed"
    elif name == "recovered":
        timeout = (recovery or {}).get("timeout_seconds")
        within = f" within {timeout:g} s" if isinstance(timeout, int | float) else ""
        words = "the target recovered" if value else f"the target did not recover{within}"
    else:
        words = f"{name}: {value!r} against {limit!r}"
    return f"<li>{escape(words)}: {verdict}</li>"


def _verdict(doc: Mapping[str, Any]) -> str:
    result = doc.get("result")
    if result is None:
        state = str(doc.get("state", "unknown"))
        reason = doc.get("reason")
        why = f": {reason}" if reason else ""
        return f'<p class="verdict">{badge(state)} Not finished ({escape(state + why)}).</p>'
    sentence = _VERDICTS.get(str(result), str(result))
    message = doc.get("message") or ""
    extra = f' <span class="muted">{escape(str(message))}</span>' if message else ""
    return f'<p class="verdict">{badge(str(result))} {escape(sentence)}{extra}</p>'


def _facts(doc: Mapping[str, Any]) -> str:
    rows = [
        ("target", escape(str(doc.get("target")))),
        ("scenario", escape(str(doc.get("scenario")))),
        ("started", _instant(doc.get("started_at"))),
    ]
    duration = doc.get("duration_seconds")
    if isinstance(duration, int | float):
        rows.append(("duration", f"{duration:.1f} s"))
    if doc.get("trigger"):
        rows.append(("trigger", escape(str(doc["trigger"]))))
    version = doc.get("target_version")
    if version is not None:
        shown = version if isinstance(version, str) else json.dumps(version)
        rows.append(("target version", escape(shown)))
    baseline = doc.get("baseline") or {}
    if baseline.get("latency_seconds") is not None:
        rows.append(("baseline B", _ms(baseline["latency_seconds"])))
    recovery = doc.get("recovery") or {}
    if recovery.get("good_latency_limit_seconds") is not None:
        limit = _ms(recovery["good_latency_limit_seconds"])
        rows.append(("good-probe limit", f"{limit} = B &times; (1 + tolerance) + slack"))
    if recovery:
        got = (
            f"{recovery['seconds']:.3f} s after T0"
            if recovery.get("recovered") and recovery.get("seconds") is not None
            else f"not within {recovery.get('timeout_seconds')} s"
        )
        rows.append(("recovery", escape(got)))
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<dl class="facts">{items}</dl>'


def _legend() -> str:
    keys = (
        ("baseline", "baseline probe"),
        ("recovery", "recovery probe"),
        ("failed", "failed probe (top edge)"),
        ("limit", "good-probe limit"),
        ("spike", "spike (start to T0)"),
        ("batch", "spike batch starts"),
        ("drop", "stable connection lost"),
        ("t0", "T0"),
        ("recovered", "recovery declared"),
    )
    spans = "".join(
        f'<span><span class="key" style="background:{COLORS[k]}"></span>{escape(text)}</span>'
        for k, text in keys
    )
    return f'<div class="legend">{spans}</div>'


def _errors(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return '<p class="muted">No attempt failed.</p>'
    rows = "".join(
        "<tr>"
        f"<td>{escape(str(e.get('outcome')))}</td>"
        f"<td>{escape(str(e.get('step') or '—'))}</td>"
        f"<td>{escape(str(e.get('phase')))}</td>"
        f'<td class="num">{escape(str(e.get("count")))}</td>'
        f'<td><code class="example">{escape(str(e.get("example")))}</code></td>'
        "</tr>"
        for e in errors
    )
    head = "".join(
        f'<th scope="col">{h}</th>' for h in ("Outcome", "Step", "Phase", "Count", "Example")
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def _spike(doc: Mapping[str, Any]) -> str:
    spike = doc.get("spike")
    if not spike:
        return '<p class="muted">No spike was fired.</p>'
    trace = (doc.get("detail") or {}).get("timeline") or {}
    handshakes = trace.get("spike_handshake") or {}
    chart = handshake_histogram(handshakes.get("histogram"))
    summary = spike.get("handshake_seconds") or {}
    figures = ", ".join(
        f"{q} {_ms(summary[q])}" for q in ("p50", "p95", "p99", "max") if q in summary
    )
    ratio = spike.get("success_ratio")
    ok = (spike.get("outcomes") or {}).get("ok", 0)
    line = f"{ok} of {spike.get('attempted')} attempts ok"
    if isinstance(ratio, int | float):
        line += f" ({ratio:.1%})"
    batches = trace.get("batches")
    if batches:
        line += f", in {batches} batches"
    parts = [f"<p>{escape(line)}. Handshake {escape(figures or 'not measured')}.</p>"]
    parts.append(chart or '<p class="muted">No handshake latency was recorded.</p>')
    return "\n".join(parts)


def _stable(doc: Mapping[str, Any]) -> str:
    stable = doc.get("stable")
    if not stable:
        return ""
    trace = ((doc.get("detail") or {}).get("timeline") or {}).get("stable") or {}
    line = (
        f"{stable.get('opened')} of {stable.get('connections')} opened,"
        f" {stable.get('dropped')} dropped"
    )
    drops = trace.get("drops_at") or []
    if drops:
        line += " (at " + ", ".join(f"{d:.2f} s" for d in drops[:20]) + ")"
    rtt = trace.get("keepalive_rtt_seconds")
    if rtt:
        line += f"; keepalive round trips: {rtt.get('count')}, p50 {_ms(rtt.get('p50'))},"
        line += f" p99 {_ms(rtt.get('p99'))}, max {_ms(rtt.get('max'))}"
    example = stable.get("drop_example")
    why = f' <code class="example">{escape(str(example))}</code>' if example else ""
    return f"<h2>Stable connections</h2><p>{escape(line)}.{why}</p>"


def render_run_page(doc: Mapping[str, Any]) -> str:
    """Return the page of one stored run: verdict, chart, thresholds, spike, errors."""
    run_id = str(doc.get("id"))
    target, scenario = str(doc.get("target")), str(doc.get("scenario"))
    chart = latency_chart(doc)
    trace = (doc.get("detail") or {}).get("timeline") or {}
    left_out = trace.get("probes_left_out")
    note = (
        f'<p class="muted small">{left_out} probes in the middle not kept.</p>' if left_out else ""
    )
    checks = doc.get("thresholds") or []
    recovery = doc.get("recovery")
    check_list = (
        '<ul class="checks">' + "".join(_check_words(c, recovery) for c in checks) + "</ul>"
        if checks
        else '<p class="muted">No threshold was checked.</p>'
    )
    body = f"""<header>
<h1>Run {escape(run_id)}</h1>
<a href="{pair_href(target, scenario)}">{escape(target)} / {escape(scenario)}</a>
<a class="small" href="{escape("/api/v1/runs/" + run_id, quote=True)}">JSON</a>
</header>
{_verdict(doc)}
{_facts(doc)}
<h2>Probe latency over the run</h2>
{_legend() if chart else ""}
{chart or '<p class="muted">No probe timeline was recorded for this run.</p>'}
{note}
<h2>Thresholds</h2>
{check_list}
<h2>Spike handshakes</h2>
{_spike(doc)}
{_stable(doc)}
<h2>Errors</h2>
{_errors(doc.get("errors") or [])}"""
    return _page(f"spikewatch run {run_id}", body)


def render_pair_page(target: str, scenario: str, runs: Sequence[Mapping[str, Any]]) -> str:
    """Return the page of a pair: its recent runs' recovery times as a trend, and a list.

    ``runs`` come newest first, as the store pages them.
    """
    points = []
    for doc in reversed(runs):
        if doc.get("result") is None:
            continue
        recovery = doc.get("recovery") or {}
        seconds = recovery.get("seconds") if recovery.get("recovered") else None
        label = f"{doc.get('id')} {doc.get('started_at')}: {doc.get('result')}"
        if seconds is not None:
            label += f", recovered after {seconds:.3f} s"
        points.append(TrendPoint(seconds, f"/runs/{doc.get('id')}", label))
    chart = trend_chart(points)
    rows = []
    for doc in runs:
        recovery = doc.get("recovery") or {}
        seconds = recovery.get("seconds")
        shown = f"{seconds:.2f} s" if recovery.get("recovered") and seconds is not None else "—"
        result = doc.get("result") or doc.get("state") or "unknown"
        rows.append(
            "<tr>"
            f'<td><a href="{run_href(str(doc.get("id")))}">{escape(str(doc.get("id")))}</a></td>'
            f"<td>{badge(str(result))}</td>"
            f"<td>{_instant(doc.get('started_at'))}</td>"
            f'<td class="num">{escape(shown)}</td>'
            f'<td class="small">{escape(str(doc.get("message") or ""))}</td>'
            "</tr>"
        )
    head = "".join(
        f'<th scope="col">{h}</th>' for h in ("Run", "Result", "Started", "Recovery", "Message")
    )
    table = (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table></div>"
        if rows
        else '<p class="muted">No run of this pair is stored.</p>'
    )
    body = f"""<header>
<h1>{escape(target)} / {escape(scenario)}</h1>
<span class="muted small">the recent runs, from the run history</span>
</header>
<h2>Recovery time, run by run</h2>
{chart or '<p class="muted">No finished run yet.</p>'}
<p class="muted small">Each point links to its run; a red cross is a run that did not recover.
Prometheus keeps the long-term trend; this page shows the stored runs.</p>
<h2>Runs <span class="muted small">newest first</span></h2>
{table}"""
    return _page(f"spikewatch {target} / {scenario}", body)


def render_missing_page(what: str) -> str:
    """Return the page that says what was not found."""
    return _page("spikewatch: not found", f"<h1>Not found</h1><p>{escape(what)}</p>")
