"""The run page as headless Chromium draws it: the chart's elements where the run puts them.

The known run (:mod:`tests.daemon.run_docs`) is stored, its page screenshotted at a
laptop's and a phone's width, and the PNG read back: the plotting area's frame is found
by its colour, which gives the chart's scale on screen; each element (probe points, the
failed probe's cross, the good-probe limit, the spike window, T0 and recovery) must then
be drawn, in its own colour, at the coordinates computed from the run's figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from spikewatch.daemon.api import create_app
from spikewatch.daemon.charts import COLORS, FAILED_ROW, LATENCY_PLOT, latency_scales
from tests.daemon.fakes import FakeDaemonState
from tests.daemon.png import Image, read_png
from tests.daemon.run_docs import LIMIT, PROBES, RECOVERED_AT, SPIKE_START, T0, known_run_doc
from tests.daemon.test_status_page_browser import run_chromium

PLOT = LATENCY_PLOT
X, Y = latency_scales(known_run_doc())


def rgb(color: str) -> tuple[int, int, int]:
    """Return a ``#rrggbb`` colour as a tuple."""
    value = int(color[1:], 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


@dataclass(frozen=True, slots=True)
class Frame:
    """Where the plotting area's edges are drawn on screen (their centres, in pixels)."""

    left: float
    right: float
    top: float
    bottom: float

    @property
    def scale(self) -> float:
        """Screen pixels per viewBox unit."""
        return (self.right - self.left) / (PLOT.right - PLOT.left)

    def at(self, x: float, y: float) -> tuple[float, float]:
        """Return where the viewBox point (x, y) is on screen."""
        return self.left + (x - PLOT.left) * self.scale, self.top + (y - PLOT.top) * self.scale


def pixels_of(image: Image, color: str) -> list[tuple[int, int]]:
    """Return every pixel exactly of ``color``."""
    r, g, b = rgb(color)
    target = bytes((r, g, b))
    out = []
    step = image.channels
    for y, row in enumerate(image.rows):
        start = row.find(target)
        while start != -1:
            if start % step == 0:
                out.append((start // step, y))
            start = row.find(target, start + 1)
    return out


def _edge(counts: dict[int, int], around: int) -> float:
    """Return the centre of the one- or two-pixel-wide edge drawn at ``around``."""
    near = [c for c in (around - 1, around, around + 1) if counts.get(c, 0) >= counts[around] / 2]
    return sum(c * counts[c] for c in near) / sum(counts[c] for c in near) + 0.5


def find_frame(image: Image) -> Frame:
    """Find the latency chart's plotting area by its frame's colour.

    Its sides are the columns with the most frame-coloured pixels (the right one drawn
    over by nothing); the right side's longest run gives its top and bottom.
    """
    axis = pixels_of(image, COLORS["axis"])
    columns: dict[int, list[int]] = {}
    for x, y in axis:
        columns.setdefault(x, []).append(y)
    counts = {x: len(ys) for x, ys in columns.items()}
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)
    first = ranked[0]
    second = next(c for c in ranked if abs(c - first) > 50)
    left, right = min(first, second), max(first, second)
    runs: list[list[int]] = []
    for y in sorted(columns[right]):
        if runs and y - runs[-1][-1] <= 4:
            runs[-1].append(y)
        else:
            runs.append([y])
    longest = max(runs, key=len)
    rows: dict[int, int] = {}
    for x, y in axis:
        if left <= x <= right:
            rows[y] = rows.get(y, 0) + 1
    top = max((longest[0], longest[0] + 1), key=lambda y: rows.get(y, 0))
    bottom = max((longest[-1] - 1, longest[-1]), key=lambda y: rows.get(y, 0))
    return Frame(_edge(counts, left), _edge(counts, right), _edge(rows, top), _edge(rows, bottom))


def inside(frame: Frame, points: list[tuple[int, int]], margin: int = 3) -> list[tuple[int, int]]:
    """Keep the points within the plotting area (and ``margin`` pixels around it)."""
    return [
        (x, y)
        for x, y in points
        if frame.left - margin <= x <= frame.right + margin
        and frame.top - margin <= y <= frame.bottom + margin
    ]


def centroid(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Return the mean pixel (the centre of what was drawn)."""
    return (
        sum(x for x, _ in points) / len(points) + 0.5,
        sum(y for _, y in points) / len(points) + 0.5,
    )


@pytest.fixture
async def run_url() -> AsyncIterator[str]:
    """Serve the app on 127.0.0.1 port 0 with the known run stored; yield its page's URL."""
    state = FakeDaemonState()
    state.history.store.store.put(known_run_doc(run_id="r-known"), time.time())
    server = TestServer(create_app(state), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/runs/r-known"))
    finally:
        await server.close()


async def screenshot(url: str, tmp_path: Path, width: int, height: int) -> Image:
    """Return Chromium's screenshot of ``url`` in a window of ``width`` x ``height``."""
    shot = tmp_path / f"run-{width}.png"
    await run_chromium(
        tmp_path / f"profile-{width}",
        f"--screenshot={shot}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
        "--force-device-scale-factor=1",
        url,
    )
    image = read_png(shot.read_bytes())
    assert (image.width, image.height) == (width, height)
    return image


@pytest.mark.parametrize(("width", "height"), [(1000, 1300), (390, 1100)], ids=["laptop", "phone"])
async def test_the_chart_draws_each_element_where_the_run_puts_it(
    run_url: str, tmp_path: Path, width: int, height: int
) -> None:
    """At a laptop's and a phone's width the chart fits the window, keeps its proportions,
    and draws the probes, the failed probe, the limit, the spike, T0 and recovery at the
    coordinates computed from the known run's figures."""
    image = await screenshot(run_url, tmp_path, width, height)
    frame = find_frame(image)
    scale = frame.scale
    assert frame.right < width  # no sideways scrolling, on a phone either
    assert 0.4 < scale < 1.3
    # The viewBox keeps its aspect: the height on screen is the width's proportion.
    assert frame.bottom - frame.top == pytest.approx((PLOT.bottom - PLOT.top) * scale, abs=2)
    tolerance = 2.0

    for phase in ("baseline", "recovery"):
        drawn = inside(frame, pixels_of(image, COLORS[phase]))
        expected = [frame.at(X(at), Y(lat)) for p, at, lat in PROBES if p == phase and lat]
        # Every pixel of the probe colour belongs to one of the expected points...
        for x, y in drawn:
            assert min(math.dist((x + 0.5, y + 0.5), e) for e in expected) <= 4 * scale + 2
        # ...and each expected point is drawn, centred where it should be.
        for ex, ey in expected:
            near = [
                (x, y) for x, y in drawn if math.dist((x + 0.5, y + 0.5), (ex, ey)) <= 4 * scale + 2
            ]
            assert near, f"no {phase} probe drawn at ({ex:.1f}, {ey:.1f})"
            cx, cy = centroid(near)
            assert (cx, cy) == (pytest.approx(ex, abs=tolerance), pytest.approx(ey, abs=tolerance))

    cross = inside(frame, pixels_of(image, COLORS["failed"]))
    ex, ey = frame.at(X(4.0), PLOT.top + FAILED_ROW)
    assert centroid(cross) == (pytest.approx(ex, abs=tolerance), pytest.approx(ey, abs=tolerance))

    limit = inside(frame, pixels_of(image, COLORS["limit"]))
    _, ly = frame.at(0, Y(LIMIT))
    assert {y for _, y in limit} <= {math.floor(ly + d) for d in (-1.5, -0.5, 0.5, 1.5)}
    xs = [x for x, _ in limit]
    assert min(xs) <= frame.left + 2
    assert max(xs) >= frame.right - 5 * scale - 2  # a dash (8 on, 4 off) may stop short
    assert len(limit) > 0.5 * (frame.right - frame.left)  # dashed, mostly drawn

    for name, at, solid in (("t0", T0, True), ("recovered", RECOVERED_AT, False)):
        line = inside(frame, pixels_of(image, COLORS[name]))
        lx, _ = frame.at(X(at), 0)
        assert {x for x, _ in line} <= {math.floor(lx + d) for d in (-1.5, -0.5, 0.5, 1.5)}
        ys = [y for _, y in line]
        assert min(ys) <= frame.top + 4 * scale + 2
        assert max(ys) >= frame.bottom - 4 * scale - 2
        rows = len(set(ys))
        height_px = frame.bottom - frame.top
        assert rows > (0.9 if solid else 0.5) * height_px, f"{name}: {rows} of {height_px} rows"

    spike = inside(frame, pixels_of(image, COLORS["spike"]))
    (x0, _), (x1, _) = frame.at(X(SPIKE_START), 0), frame.at(X(T0), 0)
    xs = [x for x, _ in spike]
    assert min(xs) == pytest.approx(x0, abs=tolerance)
    assert max(xs) + 1 == pytest.approx(x1, abs=2 * scale + tolerance)  # up to T0's line
