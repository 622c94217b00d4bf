"""The run page, the pair page and their SVG charts: geometry, escaping, routes (no browser)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

from spikewatch.daemon.charts import (
    FAILED_ROW,
    LATENCY_PLOT,
    TREND_PLOT,
    Scale,
    TrendPoint,
    handshake_histogram,
    latency_chart,
    latency_scales,
    nice_ticks,
    trend_chart,
)
from spikewatch.daemon.history import RunEntry
from spikewatch.daemon.run_page import render_pair_page, render_run_page
from tests.daemon.conftest import Client
from tests.daemon.fakes import FakeDaemonState, finished_result, finished_run
from tests.daemon.run_docs import DURATION, LIMIT, PROBES, RECOVERED_AT, SPIKE_START, T0
from tests.daemon.run_docs import known_run_doc as known

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>\'&'
HOSTILE_EXAMPLE = "</code><img src=x onerror=alert(1)><!--"


#: The known run's scales, by hand: x to the run's duration + 2 %, y to the slowest
#: probe (40 ms) + 15 %, over the plotting area 64..784 by 290..16.
X_HI = DURATION * 1.02
Y_HI = 0.040 * 1.15


def px(seconds: float) -> float:
    """Where the known run's chart draws an instant."""
    return round(64 + seconds / X_HI * 720, 2)


def py(latency: float) -> float:
    """Where the known run's chart draws a latency."""
    return round(290 - latency / Y_HI * 274, 2)


def svg_of(text: str | None) -> ET.Element:
    """Parse a chart (it must be well-formed XML)."""
    assert text is not None
    return ET.fromstring(text)  # noqa: S314 - our own output, parsed in a test


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    """Return the ``tag`` elements whose class list holds ``cls``."""
    return [e for e in root.iter(SVG + tag) if cls in (e.get("class") or "").split()]


def test_scale_maps_its_ends_and_rounds() -> None:
    """A scale maps lo and hi onto its pixel ends, linearly between, inverted for y."""
    x = Scale(0.0, 10.0, 64, 784)
    assert (x(0.0), x(10.0), x(2.5)) == (64, 784, 244)
    y = Scale(0.0, 2.0, 290, 16)
    assert (y(0.0), y(2.0), y(1.0)) == (290, 16, 153)
    assert Scale(0.0, 3.0, 0, 1)(1.0) == 0.33


def test_nice_ticks_are_1_2_5_steps_from_zero() -> None:
    """Ticks start at 0 and step by 1, 2 or 5 times a power of ten, never past hi."""
    assert nice_ticks(7.14) == (0.0, 2.0, 4.0, 6.0)
    assert nice_ticks(0.046) == (0.0, 0.01, 0.02, 0.03, 0.04)
    assert nice_ticks(10.0) == (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)
    assert nice_ticks(0.0) == (0.0,)


def test_the_known_runs_scales() -> None:
    """x spans 0 to the duration + 2 %, y 0 to the slowest probe + 15 %."""
    x, y = latency_scales(known())
    assert x == Scale(0.0, pytest.approx(X_HI), 64, 784)
    assert y == Scale(0.0, pytest.approx(Y_HI), 290, 16)


def test_each_probe_is_a_point_at_its_start_and_latency_and_a_failure_a_cross_on_top() -> None:
    """Baseline and recovery probes at (start, latency); the timed-out one on the top row."""
    root = svg_of(latency_chart(known()))
    drawn = {
        (c.get("class"), float(c.get("cx", "nan")), float(c.get("cy", "nan")))
        for c in by_class(root, "circle", "probe")
    }
    expected = {
        (f"probe {phase}", px(at), py(latency))
        for phase, at, latency in PROBES
        if latency is not None
    }
    assert drawn == expected
    (cross,) = by_class(root, "path", "failed")
    x, y = px(4.0), LATENCY_PLOT.top + FAILED_ROW
    assert cross.get("d") == f"M{x - 4:g} {y - 4:g}l8 8m0 -8l-8 8"


def test_the_limit_spike_t0_and_recovery_are_where_their_instants_are() -> None:
    """The limit is a horizontal line at 11 ms; the spike shaded from its start to T0; T0
    and the recovery instant vertical lines across the plotting area."""
    root = svg_of(latency_chart(known()))
    (limit,) = by_class(root, "line", "limit")
    assert (float(limit.get("y1", "")), float(limit.get("y2", ""))) == (py(LIMIT), py(LIMIT))
    assert (limit.get("x1"), limit.get("x2")) == ("64", "784")
    (window,) = by_class(root, "rect", "spike-window")
    assert float(window.get("x", "")) == px(SPIKE_START)
    assert float(window.get("width", "")) == pytest.approx(px(T0) - px(SPIKE_START), abs=0.011)
    for cls, at in (("t0", T0), ("recovered", RECOVERED_AT)):
        (line,) = by_class(root, "line", cls)
        assert float(line.get("x1", "")) == float(line.get("x2", "")) == px(at)
        assert (line.get("y1"), line.get("y2")) == ("16", "290")


def test_batches_and_stable_drops_are_ticks_on_the_bottom_edge_at_their_instants() -> None:
    """Each batch start a short tick, each stable connection lost a taller one."""
    root = svg_of(latency_chart(known()))
    batches = by_class(root, "line", "batch")
    assert [float(b.get("x1", "")) for b in batches] == [px(2.5), px(3.0), px(3.5)]
    assert {(b.get("y1"), b.get("y2")) for b in batches} == {("282", "290")}
    (drop,) = by_class(root, "line", "drop")
    assert (float(drop.get("x1", "")), drop.get("y1"), drop.get("y2")) == (px(3.2), "274", "290")


def test_a_run_without_a_timeline_draws_no_chart_and_says_so() -> None:
    """A run stored before timelines existed (or cut short) has no latency chart."""
    doc = known()
    del doc["detail"]["timeline"]
    assert latency_chart(doc) is None
    assert "No probe timeline was recorded for this run." in render_run_page(doc)


def test_the_histogram_draws_a_bar_per_bucket_from_the_first_to_the_last_used() -> None:
    """Buckets 2, 5, 10, 20 and 50 ms: five equal bars, heights in proportion to counts."""
    histogram = known()["detail"]["timeline"]["spike_handshake"]["histogram"]
    root = svg_of(handshake_histogram(histogram))
    bars = by_class(root, "rect", "bar")
    assert len(bars) == 5
    heights = [float(b.get("height", "")) for b in bars]
    per_count = 184 / (12 * 1.1)  # plotting area 200 - 16, to the largest count + 10 %
    assert heights == pytest.approx([10 * per_count, 12 * per_count, 0, 0, 2 * per_count], abs=0.02)
    labels = [t.text for t in root.iter(SVG + "text") if (t.text or "").startswith("≤")]
    assert labels == ["≤ 2", "≤ 5", "≤ 10", "≤ 20", "≤ 50"]
    assert handshake_histogram(None) is None
    assert handshake_histogram({"edges_seconds": [0.1], "counts": [0, 0]}) is None


def test_the_trend_draws_each_run_linked_to_its_page() -> None:
    """Recovered runs are points at their recovery time; the others crosses on the top row."""
    points = [
        TrendPoint(1.0, "/runs/a", "a"),
        TrendPoint(None, "/runs/b", "b"),
        TrendPoint(3.0, "/runs/c", "c"),
    ]
    root = svg_of(trend_chart(points))
    links = [a.get("href") for a in root.iter(SVG + "a")]
    assert links == ["/runs/a", "/runs/b", "/runs/c"]
    x = Scale(0.0, 2.0, TREND_PLOT.left + 120, TREND_PLOT.right - 120)
    y = Scale(0.0, 3.0 * 1.15, TREND_PLOT.bottom, TREND_PLOT.top)
    circles = [
        (float(c.get("cx", "")), float(c.get("cy", ""))) for c in by_class(root, "circle", "run")
    ]
    assert circles == [(x(0), y(1.0)), (x(2), y(3.0))]
    (cross,) = by_class(root, "path", "failed")
    assert (cross.get("d") or "").startswith(f"M{x(1) - 4:g} ")
    assert trend_chart([]) is None


def test_the_run_page_says_the_verdict_and_each_threshold_in_words() -> None:
    """The verdict, each check as a sentence with met or missed, the errors and the version."""
    page = render_run_page(known(target_version="v2.7.1"))
    assert "Failed: the target missed at least one threshold." in page
    assert 'spike success ratio 96.0%, at least 90.0% needed: <span class="met">met' in page
    assert 'handshake p95 45.00 ms, at most 20.00 ms allowed: <span class="missed">' in page
    assert "recovery 1.50 s, at most 60 s allowed" in page
    assert "1 stable connections dropped, at most 1 allowed" in page
    assert "the target recovered: " in page
    assert "no upgrade answer within 5s" in page
    assert "<dt>target version</dt><dd>v2.7.1</dd>" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<a href="/targets/chat-staging/avalanche">' in page
    assert "<script" not in page


def test_every_value_from_a_run_is_escaped() -> None:
    """Hostile target, scenario, id, message, version and error example stay text."""
    doc = known(
        run_id=HOSTILE, target=HOSTILE, scenario=HOSTILE, message=HOSTILE, target_version=HOSTILE
    )
    doc["errors"][0]["example"] = HOSTILE_EXAMPLE
    doc["stable"]["drop_example"] = HOSTILE_EXAMPLE
    page = render_run_page(doc)
    for raw in ("<script", "<img", "<!--", 'alert("x")'):
        assert raw not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#x27;&amp;" in page
    assert "&lt;/code&gt;&lt;img src=x onerror=alert(1)&gt;&lt;!--" in page
    # In a link the names are percent-encoded, so no quote can end the attribute.
    assert 'href="/targets/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E%27%26/' in page
    pair = render_pair_page(HOSTILE, HOSTILE, [doc])
    for raw in ("<script", "<img", 'alert("x")'):
        assert raw not in pair


def test_a_run_not_finished_says_so() -> None:
    """A cancelled run has no verdict but its state and why."""
    doc = {"id": "q", "target": "t", "scenario": "s", "state": "cancelled", "result": None,
           "reason": "the daemon stopped before the run finished"}  # fmt: skip
    page = render_run_page(doc)
    assert "Not finished (cancelled: the daemon stopped before the run finished)." in page
    assert "No threshold was checked." in page
    assert "No spike was fired." in page


@pytest.fixture
def state() -> FakeDaemonState:
    """A fake daemon with the known run stored and a finished run in memory."""
    fake = FakeDaemonState()
    fake.history.store.store.put(known(run_id="r-known", trigger="api"), time.time())
    fake.history.add(finished_run(finished_result(run_id="r-mem")))
    return fake


async def test_the_run_page_is_served_with_the_strict_csp(client: Client) -> None:
    """GET /runs/{id} answers HTML with the chart, and the CSP that forbids any script."""
    response = await client.get("/runs/r-known")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'"
    )
    page = await response.text()
    assert '<svg class="chart"' in page
    assert 'class="limit"' in page


async def test_a_run_in_memory_has_its_page_and_an_unknown_one_a_404_page(client: Client) -> None:
    """A run held in memory answers its page; an unknown id an HTML 404."""
    response = await client.get("/runs/r-mem")
    assert response.status == 200
    assert "Run r-mem" in await response.text()
    response = await client.get("/runs/nope")
    assert response.status == 404
    assert response.content_type == "text/html"
    assert "No run &#x27;nope&#x27; in the run history." in await response.text()


async def test_the_pair_page_shows_its_runs_and_a_trend(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /targets/{target}/{scenario} lists the pair's stored runs and draws their trend."""
    await state.history.save(
        RunEntry("r-q", "chat-staging", "avalanche", "api", time.time()), None
    )  # a queued run: listed, not in the trend
    response = await client.get("/targets/chat-staging/avalanche")
    assert response.status == 200
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = await response.text()
    assert '<a href="/runs/r-known">r-known</a>' in page
    assert '<a href="/runs/r-q">r-q</a>' in page
    assert page.count('<a href="/runs/') == 5  # 3 rows, 2 points (r-q has no result)
    root = svg_of(page[page.index('<svg class="chart"') : page.index("</svg>") + 6])
    assert len(by_class(root, "circle", "run")) == 2
    response = await client.get("/targets/echo-local/ramp")
    assert response.status == 200
    assert "No run of this pair is stored." in await response.text()
    response = await client.get("/targets/nobody/nothing")
    assert response.status == 404


def test_a_run_cut_short_draws_only_what_it_recorded() -> None:
    """No T0, recovery or limit: the probes alone; unmeasured checks and odd values in words."""
    doc = known(started_at="not a time")
    trace = doc["detail"]["timeline"]
    trace.update(t0=None, recovered_at=None, good_latency_limit_seconds=None)
    trace["spike_handshake"]["histogram"]["counts"] = [0, 0, 0, 0, 1] + [0] * 14
    doc["spike"]["success_ratio"] = None
    doc["recovery"]["recovered"] = False
    doc["thresholds"] = [
        {"name": "success_ratio", "limit": 0.9, "value": None, "passed": False},
        {"name": "message_rtt_p95", "limit": 0.1, "value": None, "passed": False},
        {"name": "recovery", "limit": 60.0, "value": None, "passed": False},
        {"name": "recovered", "limit": 1.0, "value": 0.0, "passed": False},
        {"name": "some_new_check", "limit": 2, "value": 3, "passed": False},
    ]
    root = svg_of(latency_chart(doc))
    for tag, cls in (
        ("line", "t0"),
        ("line", "recovered"),
        ("line", "limit"),
        ("rect", "spike-window"),
    ):
        assert by_class(root, tag, cls) == []
    assert len(by_class(root, "circle", "probe")) == 10
    page = render_run_page(doc)
    assert "spike success ratio not measured, at least 90.0% needed" in page
    assert "message rtt p95 not measured, at most 100.00 ms allowed" in page
    assert "recovery no recovery, at most 60 s allowed" in page
    assert "the target did not recover within 120 s" in page
    assert "some_new_check: 3 against 2" in page
    assert "<dd>not a time</dd>" in page
    assert "24 of 25 attempts ok, in 3 batches." in page
    histogram = svg_of(handshake_histogram(trace["spike_handshake"]["histogram"]))
    assert [t.text for t in histogram.iter(SVG + "text") if t.get("text-anchor") == "end"] == [
        "0",
        "1",
    ]
    pair = render_pair_page("chat-staging", "avalanche", [doc])
    assert '<path class="run failed"' in pair
