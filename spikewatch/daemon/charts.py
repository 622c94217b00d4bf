"""Charts drawn on the server as inline SVG: no script, no external asset (issue 14).

Pure functions of a stored run's document (or a pair's runs) that return SVG text, every
value escaped. Each chart has a fixed ``viewBox`` and scales to its container's width
(``width: 100%``), so it reads on a laptop and a phone alike. Its geometry is public
(:class:`Scale`, :class:`Plot`, :data:`LATENCY_PLOT`, ...) so that tests can compute
where each element must be drawn.

The latency chart: baseline and recovery probes as points (a failed probe as a cross
along the top edge), the good-probe limit B * (1 + tolerance) + slack as a dashed line,
the spike window shaded, T0 and the recovery instant as vertical lines, each batch's
start as a short tick on the bottom edge and each stable connection lost as a taller one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Final

__all__ = [
    "COLORS",
    "HISTOGRAM_PLOT",
    "LATENCY_PLOT",
    "TREND_PLOT",
    "Plot",
    "Scale",
    "TrendPoint",
    "handshake_histogram",
    "latency_chart",
    "latency_scales",
    "nice_ticks",
    "trend_chart",
    "trend_scales",
]

#: The colours that say what an element is (the browser test looks for them).
COLORS: Final = {
    "baseline": "#0550ae",
    "recovery": "#2da44e",
    "failed": "#cf222e",
    "limit": "#bf8700",
    "t0": "#8250df",
    "recovered": "#116329",
    "spike": "#ffd8d3",
    "batch": "#a40e26",
    "drop": "#fb8f44",
    "bar": "#54aeff",
    "axis": "#6e7781",
    "grid": "#eaeef2",
}


@dataclass(frozen=True, slots=True)
class Plot:
    """A chart's viewBox (``width`` by ``height``) and the plotting area inside it."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float


LATENCY_PLOT: Final = Plot(800, 330, left=64, right=784, top=16, bottom=290)
HISTOGRAM_PLOT: Final = Plot(800, 250, left=64, right=784, top=16, bottom=200)
TREND_PLOT: Final = Plot(800, 280, left=64, right=784, top=16, bottom=240)
#: Where a failed probe's cross is drawn: this far below the plotting area's top.
FAILED_ROW: Final = 8.0


@dataclass(frozen=True, slots=True)
class Scale:
    """A linear map from ``[lo, hi]`` (data) onto ``[px_lo, px_hi]`` (viewBox units)."""

    lo: float
    hi: float
    px_lo: float
    px_hi: float

    def __call__(self, value: float) -> float:
        """Return where ``value`` is drawn, rounded to 0.01 units."""
        span = self.hi - self.lo
        return round(self.px_lo + (value - self.lo) / span * (self.px_hi - self.px_lo), 2)


def nice_ticks(hi: float, count: int = 5) -> tuple[float, ...]:
    """Return ticks 0, s, 2s, ... ≤ ``hi`` with s a 1, 2 or 5 times 10^k step, about ``count``."""
    if not hi > 0:
        return (0.0,)
    raw = hi / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.floor(hi / step + 1e-9)
    return tuple(round(i * step, 12) for i in range(n + 1))


def _num(value: float) -> str:
    return f"{value:g}"


def _text(x: float, y: float, text: str, anchor: str = "middle", cls: str = "tick") -> str:
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" class="{cls}">'
        f"{escape(text)}</text>"
    )


def _svg(plot: Plot, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_num(plot.width)} {_num(plot.height)}" role="img"'
        f' aria-label="{escape(label, quote=True)}" xmlns="http://www.w3.org/2000/svg"'
        ' preserveAspectRatio="xMidYMid meet">'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _frame(
    plot: Plot, x: Scale, y: Scale, *, x_label: str, y_label: str, y_tick: Callable[[float], str]
) -> list[str]:
    """Grid lines, tick labels and the axes' names."""
    out = []
    for tick in nice_ticks(y.hi):
        py = y(tick)
        out.append(
            f'<line x1="{_num(plot.left)}" x2="{_num(plot.right)}" y1="{_num(py)}" y2="{_num(py)}"'
            f' stroke="{COLORS["grid"]}" shape-rendering="crispEdges"/>'
        )
        out.append(_text(plot.left - 6, py + 4, y_tick(tick), anchor="end"))
    out.extend(_text(x(tick), plot.bottom + 16, _num(tick)) for tick in nice_ticks(x.hi))
    out.append(
        f'<rect class="frame" x="{_num(plot.left)}" y="{_num(plot.top)}"'
        f' width="{_num(plot.right - plot.left)}" height="{_num(plot.bottom - plot.top)}"'
        f' fill="none" stroke="{COLORS["axis"]}" shape-rendering="crispEdges"/>'
    )
    out.append(_text((plot.left + plot.right) / 2, plot.height - 6, x_label, cls="axis-name"))
    out.append(
        f'<text class="axis-name" transform="translate(14 {_num((plot.top + plot.bottom) / 2)})'
        f' rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
    )
    return out


def _vline(cls: str, x: float, plot: Plot, *, color: str, title: str, dash: str = "") -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="{cls}" x1="{_num(x)}" x2="{_num(x)}" y1="{_num(plot.top)}"'
        f' y2="{_num(plot.bottom)}" stroke="{color}" stroke-width="2"{dashed}'
        f' shape-rendering="crispEdges"><title>{escape(title)}</title></line>'
    )


def _get(doc: Mapping[str, Any], *keys: str) -> Any:
    value: Any = doc
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def latency_scales(doc: Mapping[str, Any], plot: Plot = LATENCY_PLOT) -> tuple[Scale, Scale]:
    """Return the latency chart's x (seconds since the start) and y (seconds) scales.

    x runs from 0 to the latest instant drawn (a probe's end, T0, recovery, the run's
    duration) plus 2 %; y from 0 to the slowest probe or the limit, plus 15 %.
    """
    timeline = _get(doc, "detail", "timeline") or {}
    probes = timeline.get("probes") or []
    ends = [p["at"] + (p["latency"] or 0.0) for p in probes]
    marks = [timeline.get("t0"), timeline.get("recovered_at"), doc.get("duration_seconds")]
    x_hi = max([*ends, *(m for m in marks if m is not None), 1e-3]) * 1.02
    lats = [p["latency"] for p in probes if p["latency"] is not None]
    limit = timeline.get("good_latency_limit_seconds")
    y_hi = max([*lats, *([limit] if limit is not None else []), 1e-4]) * 1.15
    x = Scale(0.0, x_hi, plot.left, plot.right)
    y = Scale(0.0, y_hi, plot.bottom, plot.top)
    return x, y


def latency_chart(doc: Mapping[str, Any], plot: Plot = LATENCY_PLOT) -> str | None:
    """Return the probe latency chart of a stored run, or None without a timeline."""
    timeline = _get(doc, "detail", "timeline")
    if not isinstance(timeline, Mapping) or not timeline.get("probes"):
        return None
    x, y = latency_scales(doc, plot)
    body = _frame(
        plot,
        x,
        y,
        x_label="seconds since the run started",
        y_label="probe latency (ms)",
        y_tick=_ms,
    )
    spike_start = _get(doc, "detail", "timeline_seconds", "spike_start")
    t0 = timeline.get("t0")
    if spike_start is not None and t0 is not None:
        x0, x1 = x(spike_start), x(t0)
        body.insert(
            0,
            f'<rect class="spike-window" x="{_num(x0)}" y="{_num(plot.top)}"'
            f' width="{_num(max(x1 - x0, 1.0))}" height="{_num(plot.bottom - plot.top)}"'
            f' fill="{COLORS["spike"]}" shape-rendering="crispEdges">'
            f"<title>spike: {spike_start:.3f} s to T0 {t0:.3f} s</title></rect>",
        )
    limit = timeline.get("good_latency_limit_seconds")
    if limit is not None:
        ly = y(limit)
        body.append(
            f'<line class="limit" x1="{_num(plot.left)}" x2="{_num(plot.right)}"'
            f' y1="{_num(ly)}" y2="{_num(ly)}" stroke="{COLORS["limit"]}" stroke-width="2"'
            ' stroke-dasharray="8 4" shape-rendering="crispEdges">'
            f"<title>good-probe limit {limit * 1000:.3f} ms</title></line>"
        )
    if t0 is not None:
        body.append(_vline("t0", x(t0), plot, color=COLORS["t0"], title=f"T0 at {t0:.3f} s"))
    recovered = timeline.get("recovered_at")
    if recovered is not None:
        title = f"recovered at {recovered:.3f} s"
        body.append(
            _vline(
                "recovered", x(recovered), plot, color=COLORS["recovered"], title=title, dash="6 3"
            )
        )
    body.extend(
        _ticks("batch", timeline.get("batch_starts") or [], x, plot, length=8, what="batch at")
    )
    drops = (timeline.get("stable") or {}).get("drops_at") or []
    body.extend(_ticks("drop", drops, x, plot, length=16, what="stable connection lost at"))
    for p in timeline["probes"]:
        body.append(_probe_mark(p, x, y, plot))
    label = "probe latency over the run, with the good-probe limit, the spike, T0 and recovery"
    return _svg(plot, label, body)


def _ticks(
    cls: str, instants: Sequence[float], x: Scale, plot: Plot, *, length: float, what: str
) -> list[str]:
    """Short vertical ticks up from the bottom edge, one per instant."""
    return [
        f'<line class="{cls}" x1="{_num(x(at))}" x2="{_num(x(at))}"'
        f' y1="{_num(plot.bottom - length)}" y2="{_num(plot.bottom)}"'
        f' stroke="{COLORS[cls]}" stroke-width="2" shape-rendering="crispEdges">'
        f"<title>{escape(what)} {at:.3f} s</title></line>"
        for at in instants
    ]


def _ms(seconds: float) -> str:
    return _num(round(seconds * 1000, 6))


def _probe_mark(p: Mapping[str, Any], x: Scale, y: Scale, plot: Plot) -> str:
    at = float(p["at"])
    phase = str(p["phase"])
    px = x(at)
    if p["latency"] is None:
        py = plot.top + FAILED_ROW
        title = f"{phase} probe at {at:.3f} s: {p['outcome']}"
        return (
            f'<path class="probe failed" d="M{_num(px - 4)} {_num(py - 4)}l8 8m0 -8l-8 8"'
            f' stroke="{COLORS["failed"]}" stroke-width="2.5"><title>{escape(title)}</title></path>'
        )
    latency = float(p["latency"])
    title = f"{phase} probe at {at:.3f} s: {latency * 1000:.3f} ms"
    color = COLORS["recovery"] if phase == "recovery" else COLORS["baseline"]
    return (
        f'<circle class="probe {escape(phase, quote=True)}" cx="{_num(px)}" cy="{_num(y(latency))}"'
        f' r="4" fill="{color}"><title>{escape(title)}</title></circle>'
    )


def handshake_histogram(
    histogram: Mapping[str, Any] | None, plot: Plot = HISTOGRAM_PLOT
) -> str | None:
    """Return the spike's handshake latency histogram, or None when nothing was measured.

    One bar per bucket from the first to the last that counted something, equal widths
    (the buckets are log-spaced), labelled with their upper bound in ms.
    """
    if not histogram:
        return None
    edges: list[float] = list(histogram["edges_seconds"])
    counts: list[int] = list(histogram["counts"])
    used = [i for i, c in enumerate(counts) if c]
    if not used:
        return None
    first, last = used[0], used[-1]
    shown = counts[first : last + 1]
    width = (plot.right - plot.left) / len(shown)
    y = Scale(0.0, max(shown) * 1.1, plot.bottom, plot.top)
    body = []
    for tick in nice_ticks(y.hi):
        if tick != int(tick):
            continue
        py = y(tick)
        body.append(
            f'<line x1="{_num(plot.left)}" x2="{_num(plot.right)}" y1="{_num(py)}" y2="{_num(py)}"'
            f' stroke="{COLORS["grid"]}" shape-rendering="crispEdges"/>'
        )
        body.append(_text(plot.left - 6, py + 4, _num(tick), anchor="end"))
    for n, count in enumerate(shown):
        i = first + n
        label = f"≤ {_num(edges[i] * 1000)}" if i < len(edges) else f"> {_num(edges[-1] * 1000)}"
        bx = plot.left + n * width
        by = y(count)
        body.append(
            f'<rect class="bar" x="{_num(round(bx + 2, 2))}" y="{_num(by)}"'
            f' width="{_num(round(width - 4, 2))}" height="{_num(round(plot.bottom - by, 2))}"'
            f' fill="{COLORS["bar"]}"><title>{escape(label)} ms: {count}</title></rect>'
        )
        body.append(_text(bx + width / 2, plot.bottom + 16, label))
    body.append(
        f'<line x1="{_num(plot.left)}" x2="{_num(plot.right)}" y1="{_num(plot.bottom)}"'
        f' y2="{_num(plot.bottom)}" stroke="{COLORS["axis"]}" shape-rendering="crispEdges"/>'
    )
    body.append(
        _text((plot.left + plot.right) / 2, plot.height - 12, "handshake (ms)", cls="axis-name")
    )
    return _svg(plot, "the spike's handshake latencies, attempts per bucket", body)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One run of a pair: its recovery (None: not recovered), its page, what it says."""

    seconds: float | None
    href: str
    label: str


def trend_scales(points: Sequence[TrendPoint], plot: Plot = TREND_PLOT) -> tuple[Scale, Scale]:
    """Return the trend's x (run, oldest first, by index) and y (recovery seconds) scales."""
    n = max(len(points), 2)
    pad = (plot.right - plot.left) / (2 * n)
    x = Scale(0.0, n - 1.0, plot.left + pad, plot.right - pad)
    hi = max([p.seconds for p in points if p.seconds is not None] + [0.001]) * 1.15
    return x, Scale(0.0, hi, plot.bottom, plot.top)


def trend_chart(points: Sequence[TrendPoint], plot: Plot = TREND_PLOT) -> str | None:
    """Return the recovery-time trend of a pair's runs (oldest first), or None without runs.

    Each run is a point linked to its page; one that did not recover is a cross along
    the top edge.
    """
    if not points:
        return None
    x, y = trend_scales(points, plot)
    body = []
    for tick in nice_ticks(y.hi):
        py = y(tick)
        body.append(
            f'<line x1="{_num(plot.left)}" x2="{_num(plot.right)}" y1="{_num(py)}" y2="{_num(py)}"'
            f' stroke="{COLORS["grid"]}" shape-rendering="crispEdges"/>'
        )
        body.append(_text(plot.left - 6, py + 4, _num(tick), anchor="end"))
    recovered = [(x(i), y(p.seconds)) for i, p in enumerate(points) if p.seconds is not None]
    if len(recovered) > 1:
        path = " ".join(f"{_num(px)},{_num(py)}" for px, py in recovered)
        body.append(
            f'<polyline class="trend" points="{path}" fill="none"'
            f' stroke="{COLORS["baseline"]}" stroke-width="1.5"/>'
        )
    for i, p in enumerate(points):
        px = x(i)
        href = escape(p.href, quote=True)
        title = escape(p.label)
        if p.seconds is None:
            py = plot.top + FAILED_ROW
            mark = (
                f'<path class="run failed" d="M{_num(px - 4)} {_num(py - 4)}l8 8m0 -8l-8 8"'
                f' stroke="{COLORS["failed"]}" stroke-width="2.5"/>'
            )
        else:
            mark = (
                f'<circle class="run" cx="{_num(px)}" cy="{_num(y(p.seconds))}" r="5"'
                f' fill="{COLORS["recovery"]}"/>'
            )
        body.append(f'<a href="{href}"><title>{title}</title>{mark}</a>')
    body.append(
        f'<line x1="{_num(plot.left)}" x2="{_num(plot.right)}" y1="{_num(plot.bottom)}"'
        f' y2="{_num(plot.bottom)}" stroke="{COLORS["axis"]}" shape-rendering="crispEdges"/>'
    )
    body.append(
        _text(
            (plot.left + plot.right) / 2,
            plot.height - 12,
            "runs, oldest to newest",
            cls="axis-name",
        )
    )
    body.append(
        f'<text class="axis-name" transform="translate(14 {_num((plot.top + plot.bottom) / 2)})'
        ' rotate(-90)" text-anchor="middle">recovery (s)</text>'
    )
    return _svg(plot, "recovery time of the recent runs, oldest to newest", body)
