"""The status page as a real headless browser renders it (Debian's ``chromium`` package)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from spikewatch.core.outcomes import RunResultKind
from spikewatch.daemon.api import create_app
from tests.conftest import scaled
from tests.daemon.fakes import NOW, FakeDaemonState, finished_result, finished_run

WINDOW = (1400, 900)


def chromium() -> str:
    """Return the chromium executable; fail (never skip) when it is not installed."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "chromium is not installed; these tests need a real browser:"
            " apt-get install -y chromium (Debian package 'chromium')"
        )
    return path


async def run_chromium(profile: Path, *args: str) -> bytes:
    """Run headless chromium with ``args`` without blocking the loop; return its stdout."""
    process = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own group, so its helper processes go with it
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), scaled(60))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        pytest.fail("chromium did not finish within 60 s")
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout


class TableRows(HTMLParser):
    """Collect each table row of a document as the text of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Start a row or a cell."""
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        """Close a cell into the current row."""
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        """Keep the text inside a cell."""
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """Serve the app on 127.0.0.1 port 0 with a passed and a failed run; yield the page URL."""
    state = FakeDaemonState()
    state.next_runs[("chat-staging", "avalanche")] = NOW + 300
    state.history.add(finished_run(finished_result("chat-staging", "avalanche", run_id="r-ok")))
    failed = finished_result(
        "echo-local",
        "ramp",
        run_id="r-bad",
        result=RunResultKind.FAILED,
        ok=10,
        attempted=30,
        recovery_seconds=None,
        message="missed: success_ratio, recovered",
    )
    state.history.add(finished_run(failed))
    server = TestServer(create_app(state), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


async def test_browser_shows_each_target_with_its_last_result(
    page_url: str, tmp_path: Path
) -> None:
    """Headless chromium renders the page with each pair's target and its last result."""
    dom = (await run_chromium(tmp_path, "--dump-dom", page_url)).decode()
    parser = TableRows()
    parser.feed(dom)
    pairs = {(row[0].split()[0], row[1]): row for row in parser.rows if len(row) == 9}
    chat = pairs["chat-staging", "avalanche"]
    assert chat[0].startswith("chat-staging wss://staging.example.com/ws/test?room=***")
    assert chat[4].endswith("2026-11-24 10:05:00 UTC")  # and a relative time before it
    assert chat[5] == "passed"
    assert chat[6] == "96.0% (24/25)"
    assert chat[7] == "1.50 s"
    ramp = pairs["echo-local", "ramp"]
    assert ramp[5] == "failed"
    assert ramp[6] == "33.3% (10/30)"
    assert ramp[7] == "not within 120 s"
    assert pairs["echo-local", "avalanche"][5] == "no run yet"
    runs = [row for row in parser.rows if len(row) == 11 and row[0].startswith("r-")]
    assert [row[0] for row in runs] == ["r-bad", "r-ok"]
    assert runs[0][2] == "—"  # no version: configured for that target
    assert runs[0][10] == "missed: success_ratio, recovered"
    assert '<a href="/runs/r-ok">r-ok</a>' in dom
    assert '<a href="/targets/chat-staging/avalanche">avalanche</a>' in dom
    assert "ready" in dom


async def test_browser_screenshot_is_a_full_png(page_url: str, tmp_path: Path) -> None:
    """Headless chromium takes a screenshot of the page at the window size asked for."""
    shot = tmp_path / "status.png"
    width, height = WINDOW
    await run_chromium(
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        page_url,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # RFC 2083 §11.2.2: IHDR comes first, width and height as big-endian 32-bit integers.
    assert struct.unpack(">II", data[16:24]) == WINDOW
    assert len(data) > 10_000  # a rendered page, not a blank canvas
