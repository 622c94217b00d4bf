"""The HTML pages besides the status page: a run's page and a target-scenario pair's.

``/runs/{id}`` shows one stored run (live from memory while it is queued or running);
``/targets/{target}/{scenario}`` the recovery times of a pair's recent runs. Both read
the run history and answer with the status page's strict CSP: no script, no asset.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from spikewatch.daemon.run_page import render_missing_page, render_pair_page, render_run_page
from spikewatch.daemon.run_store import RunFilter
from spikewatch.daemon.state import DaemonState

__all__ = ["PAGE_HEADERS", "PAIR_PAGE_RUNS", "add_page_routes"]

#: No script runs on these pages; say so, so an escaping bug cannot become one.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
#: How many of a pair's runs its page shows.
PAIR_PAGE_RUNS: Final = 100


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=PAGE_HEADERS)


def add_page_routes(app: web.Application, state: web.AppKey[DaemonState]) -> None:
    """Route the run page and the pair page on ``app``, whose ``state`` key holds the daemon."""

    async def run_page(request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        doc = await request.app[state].history.find(run_id)
        if doc is None:
            return _html(render_missing_page(f"No run {run_id!r} in the run history."), 404)
        return _html(render_run_page(doc))

    async def pair_page(request: web.Request) -> web.Response:
        target, scenario = request.match_info["target"], request.match_info["scenario"]
        history = request.app[state].history
        where = RunFilter(target=target, scenario=scenario)
        page = await history.page(where, limit=PAIR_PAGE_RUNS, cursor=None)
        known = any(
            p.target == target and p.scenario == scenario for p in request.app[state].schedules()
        )
        if not page.runs and not known:
            what = f"No pair {target!r} / {scenario!r} is configured or has stored runs."
            return _html(render_missing_page(what), 404)
        return _html(render_pair_page(target, scenario, page.runs))

    app.router.add_get("/runs/{id}", run_page, name="run_page")
    app.router.add_get("/targets/{target}/{scenario}", pair_page, name="pair_page")
