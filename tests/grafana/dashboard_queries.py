"""The PromQL of the Grafana dashboards, and how to run it outside Grafana.

``panel_queries`` reads every panel target (panels nested in collapsed rows included);
``render_query`` replaces Grafana's template variables so that Prometheus can evaluate
the result as it is: the end-to-end tests run every dashboard query against a real
Prometheus this way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

#: What ``$__range`` stands for outside Grafana: the dashboards' instant "over the time
#: range" columns then cover everything a short test run scraped.
DEFAULT_TIME_RANGE = "1h"

# $name, ${name}, ${name:format} and the deprecated [[name]] / [[name:format]].
_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\$(?P<plain>\w+)|\[\[(?P<old>\w+)(?::[^\]]*)?\]\]"
)
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "y": 365 * 86400,
}


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, rows included, and the panels of collapsed rows after their row."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (panel title, PromQL expression) for every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in iter_panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def duration_seconds(duration: str) -> float:
    """Return the seconds of a Prometheus duration such as ``90s``, ``1m30s`` or ``1h``."""
    parts = _DURATION_PART.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def render_query(
    expr: str,
    *,
    target: str,
    scenario: str,
    datasource_uid: str,
    rate_interval: str,
    time_range: str = DEFAULT_TIME_RANGE,
) -> str:
    """Return ``expr`` with Grafana's variables replaced, ready for Prometheus.

    ``$__rate_interval`` and ``$__interval`` become ``rate_interval``, ``$__range`` the
    ``time_range`` (``_s``/``_ms`` variants in seconds/milliseconds). Target and scenario
    names are ``[a-z0-9_-]+`` by the contract, so they need no regex escaping where a
    multi-value variable sits in ``=~``. An unknown variable raises ``KeyError``.
    """
    rate_s = duration_seconds(rate_interval)
    range_s = duration_seconds(time_range)
    values = {
        "target": target,
        "scenario": scenario,
        "datasource": datasource_uid,
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__interval_ms": str(round(rate_s * 1000)),
        "__range": time_range,
        "__range_s": str(int(range_s)),
        "__range_ms": str(round(range_s * 1000)),
    }

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"] or match["old"]
        if name not in values:
            raise KeyError(f"no value for the dashboard variable {name!r} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(substitute, expr)
