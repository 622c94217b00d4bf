"""The dashboards: classic JSON, wired to $datasource, every query on the contract's metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.daemon.promtool import PACKAGE
from tests.daemon.test_metrics import CONTRACT, EXTENSIONS
from tests.grafana.dashboard_queries import (
    duration_seconds,
    iter_panels,
    panel_queries,
    render_query,
)

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
OVERVIEW, TARGET = "spikewatch-overview", "spikewatch-target"
DATASOURCE_UID = "spikewatch-prometheus"
PANEL_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

#: Panels without queries of their own.
LAYOUT_ONLY = {"row", "text"}

#: The recording rules the dashboards may use (defined with the alert rules), and the
#: metric each is computed from.
RECORDING_RULES = {
    "spikewatch:last_recovery_seconds": "spikewatch_last_recovery_seconds",
    "spikewatch:recovery_seconds:median_7d": "spikewatch_last_recovery_seconds",
    "spikewatch:spike_success_ratio": "spikewatch_last_spike_success_ratio",
    "spikewatch:last_recovery_seconds_capped:by_version": "spikewatch_last_recovery_seconds",
}
PAIR = frozenset({"target", "scenario"})
#: Labels Prometheus adds to every scraped series.
SCRAPE_LABELS = frozenset({"instance", "job"})


def exposed_series() -> dict[str, frozenset[str]]:
    """Return every series name the contract exposes, with its label names."""
    names: dict[str, frozenset[str]] = {}
    for name, kind, labels in CONTRACT + EXTENSIONS:
        if kind == "histogram":
            names[f"{name}_bucket"] = labels | {"le"}
            names[f"{name}_sum"] = names[f"{name}_count"] = labels
        else:
            names[name] = labels
    names.update(dict.fromkeys(RECORDING_RULES, PAIR))
    return names


SERIES = exposed_series()
#: The labels a grouping (by, on, ...) may name: every label of the contract.
KNOWN_LABELS = frozenset().union(*SERIES.values()) | SCRAPE_LABELS

TABLE_TITLE = "Targets \N{MULTIPLICATION SIGN} scenarios"

#: Metrics of the contract no panel charts, and why.
NOT_CHARTED = {
    # when the config last loaded: the "Config reload" stat says whether it succeeded.
    "spikewatch_config_last_reload_success_timestamp_seconds",
}

#: How many queries each dashboard has (panel targets, nested row panels included).
EXPECTED_QUERY_COUNTS = {OVERVIEW: 30, TARGET: 39}

# PromQL, as far as these checks read it.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_WINDOW = re.compile(r"\[([^\]]*)\]")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_FUNCTION_CALL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "Inf", "NaN", "inf", "nan"}
_RANGE_FUNCTIONS = re.compile(r"\b(rate|irate|increase|changes|\w+_over_time)\s*\(")


def metric_names(expr: str) -> set[str]:
    """Return the series names ``expr`` selects (functions, labels and keywords left out)."""
    text = _STRING.sub('""', expr)
    text = _SELECTOR.sub(r"\1", text)
    text = _GROUPING.sub(" ", text)
    text = _WINDOW.sub(" ", text)
    text = _FUNCTION_CALL.sub("(", text)
    text = _NUMBER.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in _GROUPING.findall(_STRING.sub('""', expr))
        for label in group.split(",")
        if label.strip()
    }


def windows(expr: str) -> list[str]:
    return _WINDOW.findall(_STRING.sub('""', expr))


def balanced(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return data


@pytest.fixture(params=[OVERVIEW, TARGET])
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def query_panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in iter_panels(board) if p["type"] not in LAYOUT_ONLY)


def all_targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in query_panels(board):
        for target in panel["targets"]:
            yield panel, target


def annotation_queries(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in board["annotations"]["list"] if "expr" in a]


def every_expr(board: dict[str, Any]) -> list[str]:
    return [e for _, e in panel_queries(board)] + [a["expr"] for a in annotation_queries(board)]


def variable(board: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in board["templating"]["list"] if v["name"] == name]
    (only,) = found
    return only


def render(expr: str) -> str:
    return render_query(
        expr, target="chat-staging", scenario="avalanche", datasource_uid="ds", rate_interval="1m"
    )


# --- the files -------------------------------------------------------------------------


def test_dashboards_are_classic_json_with_their_uid_and_tag() -> None:
    """Each file is classic dashboard JSON (not v2) with schemaVersion ≥ 36, its uid, the tag."""
    for name in (OVERVIEW, TARGET):
        board = load(name)
        assert "spec" not in board
        assert "apiVersion" not in board
        assert board["schemaVersion"] >= 36
        assert board["uid"] == name
        assert "spikewatch" in board["tags"]
        assert board["title"]
        assert board["id"] is None


def test_uids_panel_ids_and_titles_are_unique() -> None:
    """The two uids differ; no panel id or query panel title repeats inside a dashboard."""
    boards = [load(OVERVIEW), load(TARGET)]
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        ids = [p["id"] for p in iter_panels(board)]
        assert len(ids) == len(set(ids)), board["uid"]
        titles = [p["title"] for p in query_panels(board)]
        assert len(titles) == len(set(titles)), board["uid"]


def test_panels_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    """Every panel lies within the 24 columns, and no two panels cover the same cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in iter_panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0
        assert pos["w"] > 0
        assert pos["h"] > 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[x, y]}"
                taken[x, y] = panel["title"]


def test_rows_group_the_panels(board: dict[str, Any]) -> None:
    """Both dashboards are split into titled rows, the first panel a row, in grid order."""
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert len(rows) >= 3
    assert board["panels"][0]["type"] == "row"
    assert all(r["title"] for r in rows)
    # Grafana files panels under the row before them in the list: keep it in grid order.
    for panels in [board["panels"]] + [r["panels"] for r in rows]:
        order = [(p["gridPos"]["y"], p["gridPos"]["x"]) for p in panels]
        assert order == sorted(order)


# --- variables -----------------------------------------------------------------------


def test_datasource_variable_defaults_to_the_provisioned_prometheus(board: dict[str, Any]) -> None:
    """$datasource is a datasource variable of Prometheus type, defaulting to the fixed uid."""
    ds = variable(board, "datasource")
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    assert ds["current"]["value"] == DATASOURCE_UID


@pytest.mark.parametrize(("name", "multi"), [(OVERVIEW, True), (TARGET, False)])
def test_target_and_scenario_variables(name: str, multi: bool) -> None:
    """$target and $scenario come from runs_total; multi with All on the overview only."""
    board = load(name)
    queries = {
        "target": "label_values(spikewatch_runs_total, target)",
        "scenario": 'label_values(spikewatch_runs_total{target=~"$target"}, scenario)',
    }
    for var_name, query in queries.items():
        var = variable(board, var_name)
        assert var["type"] == "query"
        assert var["datasource"] == PANEL_DATASOURCE
        assert var["query"]["query"] == query
        assert var["definition"] == query
        assert var["multi"] is multi
        assert var["includeAll"] is multi
        assert var["refresh"] == 2  # on time range change: new pairs appear


# --- panels --------------------------------------------------------------------------


def test_every_panel_has_datasource_unit_description_and_a_query(board: dict[str, Any]) -> None:
    """Query panels name $datasource (panel and targets), a unit, a description, a target."""
    panels = list(query_panels(board))
    assert panels
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"] == PANEL_DATASOURCE, title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        assert len(panel["description"]) > 20, title
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["datasource"] == PANEL_DATASOURCE, title
            assert target["expr"].strip(), title
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), title


def test_range_windows_are_grafanas_intervals(board: dict[str, Any]) -> None:
    """Charts use $__rate_interval; $__range only in instant "over the time range" queries.

    Every rate/increase/irate/changes/…_over_time has a window, and no window is a fixed
    duration that would break at another scrape interval or zoom level.
    """
    for panel, target in all_targets(board):
        expr = target["expr"]
        allowed = {"$__range"} if target["instant"] else {"$__rate_interval"}
        found = windows(expr)
        assert len(found) == len(_RANGE_FUNCTIONS.findall(expr)), (panel["title"], expr)
        assert set(found) <= allowed, (panel["title"], expr)
        if "$__range" in expr:
            assert target["instant"] is True
            assert target["range"] is False


def test_annotation_windows_match_their_step(board: dict[str, Any]) -> None:
    """An annotation's changes() window equals its step, so each run is marked once."""
    for annotation in annotation_queries(board):
        assert annotation["datasource"] == PANEL_DATASOURCE
        assert windows(annotation["expr"]) == [annotation["step"]]


def test_queries_use_only_the_contracts_metrics(board: dict[str, Any]) -> None:
    """Every series a query (or variable) selects is in spec.md's table or an extension."""
    exprs = every_expr(board) + [
        re.sub(r"^label_values\((.*), \w+\)$", r"\1", v["query"]["query"])
        for v in board["templating"]["list"]
        if v["type"] == "query"
    ]
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= SERIES.keys(), (names - SERIES.keys(), expr)


def test_selectors_match_only_labels_the_metric_has(board: dict[str, Any]) -> None:
    """A label matcher names a label of its metric (or a scrape label): never an empty match."""
    for expr in every_expr(board):
        for name, body in _SELECTOR.findall(_STRING.sub('""', expr)):
            labels = set(_MATCHER.findall(body))
            assert labels <= SERIES[name] | SCRAPE_LABELS, (name, labels, expr)


def test_groupings_name_known_labels(board: dict[str, Any]) -> None:
    """Every by/without/on/ignoring names labels of the contract, and brackets balance."""
    for expr in every_expr(board):
        assert balanced(expr), expr
        assert grouping_labels(expr) <= KNOWN_LABELS, expr


def test_pair_selectors_filter_by_the_variables(board: dict[str, Any]) -> None:
    """Every query on a per-pair series filters by $target and $scenario."""
    op = "=~" if board["uid"] == OVERVIEW else "="
    for title, expr in panel_queries(board):
        for name, body in _SELECTOR.findall(expr):
            if SERIES[name] >= PAIR:
                assert f'target{op}"$target"' in body, (title, expr)
                assert f'scenario{op}"$scenario"' in body, (title, expr)
        for name in metric_names(expr):
            if SERIES[name] >= PAIR:
                assert re.search(rf"{re.escape(name)}\s*\{{", expr), (title, expr)


def test_dashboards_chart_every_metric_of_the_contract() -> None:
    """Together the dashboards chart every metric of the contract but the listed ones."""
    used = {
        n for name in (OVERVIEW, TARGET) for e in every_expr(load(name)) for n in metric_names(e)
    }
    base = {RECORDING_RULES.get(n) or re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    contract = {name for name, _, _ in CONTRACT + EXTENSIONS}
    assert contract - base == NOT_CHARTED
    assert used >= RECORDING_RULES.keys()


def test_histograms_are_summed_by_le_across_replicas(board: dict[str, Any]) -> None:
    """histogram_quantile always gets a sum by (…, le) of rates or increases."""
    for title, expr in panel_queries(board):
        if "histogram_quantile" in expr:
            assert re.search(r"histogram_quantile\(0\.\d+, sum by \([^)]*\ble\)", expr), title
        if "_bucket" in expr and "histogram_quantile" not in expr:
            assert "sum by (le)" in expr, title  # heatmaps


# --- specific panels ------------------------------------------------------------------


def panel_by_title(board: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in iter_panels(board) if p["title"] == title]
    return found


def test_overview_table_joins_one_row_per_pair() -> None:
    """The centrepiece table merges instant per-pair queries into one row per pair."""
    table = panel_by_title(load(OVERVIEW), TABLE_TITLE)
    assert table["type"] == "table"
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    renames = table["transformations"][1]["options"]["renameByName"]
    for target in table["targets"]:
        assert target["instant"] is True
        assert target["format"] == "table"
        assert grouping_labels(target["expr"]) - {"le"} == PAIR, target["expr"]
        assert f"Value #{target['refId']}" in renames
    columns = set(renames.values())
    assert {"Last run", "Recovery (last run)", "Recovery (7-day median)"} <= columns
    assert {"Recovery vs median", "Handshake p95 (spike)", "Last run ended (ago)"} <= columns
    overridden = {o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]}
    assert columns <= overridden  # each column has its unit


def data_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the panel's data links, its defaults' and its overrides'."""
    config = panel["fieldConfig"]
    links: list[dict[str, Any]] = list(config["defaults"].get("links", []))
    for override in config["overrides"]:
        for prop in override["properties"]:
            if prop["id"] == "links":
                links += prop["value"]
    return links


def test_overview_links_to_the_target_detail_with_the_pair() -> None:
    """Table cells and per-pair charts link to spikewatch-target with var-target/var-scenario."""
    urls = [link["url"] for panel in query_panels(load(OVERVIEW)) for link in data_links(panel)]
    assert len(urls) >= 5
    for url in urls:
        assert url.startswith("/d/spikewatch-target/")
        assert "var-target=${__" in url
        assert "var-scenario=${__" in url
        assert "${__url_time_range}" in url
    for board in (load(OVERVIEW), load(TARGET)):
        (link,) = board["links"]
        assert link["type"] == "dashboards"
        assert link["tags"] == ["spikewatch"]
        assert link["includeVars"] is True
        assert link["keepTime"] is True


def test_target_detail_marks_failed_runs() -> None:
    """A Prometheus annotation marks the pair's failed runs, with a title."""
    (failed, invalid, _) = annotation_queries(load(TARGET))
    assert 'result=~"failed|target_down|aborted|error"' in failed["expr"]
    assert 'target="$target", scenario="$scenario"' in failed["expr"]
    assert failed["expr"].endswith("> 0")
    assert failed["titleFormat"]
    assert failed["enable"] is True
    assert 'result="invalid"' in invalid["expr"]


@pytest.mark.parametrize(("name", "op"), [(OVERVIEW, "=~"), (TARGET, "=")])
def test_version_changes_are_annotations_on_every_panel(name: str, op: str) -> None:
    """Both dashboards mark each target version change (issue 17), titled with the version;
    a dashboard-wide annotation, so every panel shows it."""
    (versions,) = [
        a for a in annotation_queries(load(name)) if a["name"] == "Target version changes"
    ]
    assert "changes(spikewatch_target_version_change_timestamp_seconds" in versions["expr"]
    assert f'spikewatch_target_info{{target{op}"$target"}}' in versions["expr"]
    assert "{{version}}" in versions["titleFormat"]
    assert versions["enable"] is True
    assert "filter" not in versions  # not limited to some panels


def test_target_detail_shows_recovery_per_version() -> None:
    """A table of the recent versions' recovery: p50 and worst over the time range."""
    table = panel_by_title(load(TARGET), "Recovery per version")
    assert table["type"] == "table"
    exprs = [t["expr"] for t in table["targets"]]
    assert [e.split("(")[0] for e in exprs] == ["quantile_over_time", "max_over_time"]
    assert all("spikewatch:last_recovery_seconds_capped:by_version" in e for e in exprs)
    renames = table["transformations"][1]["options"]["renameByName"]
    assert renames == {"Value #A": "p50", "Value #B": "worst"}


def test_target_detail_heatmap_and_stacked_outcomes() -> None:
    """Handshake buckets feed a heatmap as buckets; spike outcomes are stacked bars."""
    board = load(TARGET)
    heatmap = panel_by_title(board, "Handshake latency during spikes (heatmap)")
    assert heatmap["type"] == "heatmap"
    assert heatmap["options"]["calculate"] is False
    assert [t["format"] for t in heatmap["targets"]] == ["heatmap"]
    assert heatmap["options"]["yAxis"]["unit"] == "s"
    outcomes = panel_by_title(board, "Spike outcomes")
    custom = outcomes["fieldConfig"]["defaults"]["custom"]
    assert custom["drawStyle"] == "bars"
    assert custom["stacking"]["mode"] == "normal"
    assert (
        'sum by (outcome) (increase(spikewatch_connections_total{phase="spike"'
        in (outcomes["targets"][0]["expr"])
    )


def test_latency_panels_show_three_quantiles_by_phase() -> None:
    """Handshake, first-message and RTT charts each have p50, p95 and p99 by phase."""
    board = load(TARGET)
    for title in ("Handshake latency", "First-message latency", "Echo round-trip time"):
        exprs = [t["expr"] for t in panel_by_title(board, title)["targets"]]
        assert [e.split(",")[0] for e in exprs] == [
            "histogram_quantile(0.5",
            "histogram_quantile(0.95",
            "histogram_quantile(0.99",
        ]
        assert all("sum by (phase, le)" in e for e in exprs)


# --- panel_queries and render_query ------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), EXPECTED_QUERY_COUNTS.items())
def test_panel_queries_finds_every_target(name: str, count: int) -> None:
    """panel_queries returns one (title, expr) per target, collapsed rows' panels included."""
    board = load(name)
    queries = panel_queries(board)
    assert len(queries) == count
    assert len(queries) == sum(len(p.get("targets", [])) for p in iter_panels(board))


def test_panel_queries_reads_panels_nested_in_collapsed_rows() -> None:
    """A collapsed row keeps its panels inside it; their queries are found too."""
    board = load(OVERVIEW)
    (collapsed,) = [p for p in board["panels"] if p["type"] == "row" and p["collapsed"]]
    nested = {p["title"] for p in collapsed["panels"]}
    assert "Event-loop lag p99" in nested
    titles = {title for title, _ in panel_queries(board)}
    assert nested <= titles
    flat = {"panels": [{"title": "t", "type": "stat", "targets": [{"expr": "up"}]}]}
    assert panel_queries(flat) == [("t", "up")]


def test_render_query_leaves_no_variable(board: dict[str, Any]) -> None:
    """Every rendered query is free of Grafana variables and names the given pair."""
    for expr in every_expr(board):
        rendered = render(expr)
        assert "$" not in rendered, rendered
        assert "[[" not in rendered, rendered
        if "$target" in expr:
            assert '"chat-staging"' in rendered


def test_render_query_replaces_every_variable_form() -> None:
    """$x, ${x}, ${x:format}, [[x]] and the _s/_ms built-ins all get their values."""
    expr = (
        'rate(m{target=~"${target:regex}", scenario="[[scenario]]", ds="$datasource"}'
        "[$__rate_interval]) + $__range_s + $__range_ms + $__interval_ms + x[$__interval]"
        ' + y[$__range] + z{target="${target}"}'
    )
    assert render_query(
        expr, target="a", scenario="b", datasource_uid="u", rate_interval="1m30s", time_range="2h"
    ) == (
        'rate(m{target=~"a", scenario="b", ds="u"}[1m30s]) + 7200 + 7200000 + 90000'
        ' + x[1m30s] + y[2h] + z{target="a"}'
    )


def test_render_query_refuses_an_unknown_variable() -> None:
    """A variable render_query has no value for raises, naming it, instead of leaking a $."""
    with pytest.raises(KeyError, match="instance"):
        render('up{instance="$instance"}')


@pytest.mark.parametrize(("text", "seconds"), [("1m", 60), ("1m30s", 90), ("250ms", 0.25)])
def test_duration_seconds(text: str, seconds: float) -> None:
    """Prometheus durations convert to seconds; junk is refused."""
    assert duration_seconds(text) == seconds
    with pytest.raises(ValueError, match="duration"):
        duration_seconds("1 minute")


def check_rules(tmp_path: Path, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules`` on ``exprs`` as recording rules; fail without promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(f"promtool is not on PATH: install Debian's '{PACKAGE}' package")
    rules = [{"record": f"dashboard:q{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rendered_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool's PromQL parser accepts every rendered query."""
    exprs = [render(e) for name in (OVERVIEW, TARGET) for e in every_expr(load(name))]
    done = check_rules(tmp_path, exprs)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_promtool_check_catches_a_broken_query(tmp_path: Path) -> None:
    """The parse check can fail: promtool rejects an unbalanced expression."""
    done = check_rules(tmp_path, ["sum by (target (rate(m[1m]))"])
    assert done.returncode != 0
    assert "could not parse expression" in done.stdout + done.stderr


def test_query_checks_read_promql() -> None:
    """The helpers find names, groupings and windows, and see unbalanced brackets."""
    expr = (
        'histogram_quantile(0.95, sum by (target, le) (rate(a_bucket{x="b{c}"}[$__rate_interval])))'
        " / on (target) group_left () max(b:c) > bool 0 or vector(0) * time()"
    )
    assert metric_names(expr) == {"a_bucket", "b:c"}
    assert grouping_labels(expr) == {"target", "le"}
    assert windows(expr) == ["$__rate_interval"]
    assert balanced(expr)
    assert not balanced("sum(rate(x[1m])")
    assert not balanced("sum(x])")


# --- provisioning ---------------------------------------------------------------------


def test_datasource_provisioning_names_the_dashboards_uid() -> None:
    """The provisioned Prometheus has the uid the dashboards default to, and is the default."""
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["uid"] == DATASOURCE_UID
    assert ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True
    assert duration_seconds(ds["jsonData"]["timeInterval"]) > 0
    for name in (OVERVIEW, TARGET):
        assert variable(load(name), "datasource")["current"]["value"] == ds["uid"]


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    """A file provider loads /var/lib/grafana/dashboards into the folder "spikewatch"."""
    doc = yaml.safe_load((GRAFANA / "provisioning/dashboards/spikewatch.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "spikewatch"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
