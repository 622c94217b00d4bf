"""The Prometheus rules, their promtool unit tests, and the example Prometheus/Alertmanager configs.

promtool (Debian's ``prometheus`` package) and amtool (``prometheus-alertmanager``) run on
the shipped files; a missing tool fails the test, naming its package. The static tests
hold the rules to the conventions the dashboards, the runbook and on-call rely on: alert
names, severities, annotations, runbook anchors, and only the contract's metric names.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikewatch.daemon.metrics import SpikewatchMetrics
from tests.deploy import DEPLOY, RULES, require_tool

RULE_TESTS = RULES.with_name("spikewatch.rules.test.yml")
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
RUNBOOK = DEPLOY / "runbook.md"
RUNBOOK_URL = "https://github.com/spikewatch/spikewatch/blob/main/deploy/runbook.md"

PROMTOOL_PACKAGE = "Debian's 'prometheus' package (apt-get install -y prometheus)"
AMTOOL_PACKAGE = (
    "Debian's 'prometheus-alertmanager' package (apt-get install -y prometheus-alertmanager)"
)

#: The contract's metrics (spec.md, "Metrics"), without the ``spikewatch_`` prefix;
#: counters with their ``_total``, histograms by base name.
CONTRACT_METRICS = frozenset(
    {
        "runs_total",
        "connections_total",
        "upgrade_status_total",
        "handshake_duration_seconds",
        "first_message_duration_seconds",
        "message_rtt_seconds",
        "recovery_duration_seconds",
        "last_recovery_seconds",
        "baseline_latency_seconds",
        "last_spike_success_ratio",
        "last_run_success",
        "last_run_timestamp_seconds",
        "next_run_timestamp_seconds",
        "stable_connections_dropped_total",
        "threshold_failures_total",
        "run_duration_seconds",
        "spike_start_lateness_seconds",
        "open_connections",
        "event_loop_lag_seconds",
        "prober_saturated",
        "config_last_reload_successful",
        "config_last_reload_success_timestamp_seconds",
        "build_info",
        # README, "Beyond the contract".
        "runs_skipped_total",
        "target_info",
        "target_version_change_timestamp_seconds",
    }
)
#: Not spikewatch's own, and allowed: the process collector's start time ("the standard
#: process_* metrics stay on") and Prometheus's scrape health.
OTHER_METRICS = frozenset({"process_start_time_seconds", "up"})
SEVERITIES = frozenset({"critical", "warning", "info"})

#: The recording rules the Grafana dashboards use: name -> exact expression, or None
#: where only the name and the (target, scenario) labels are fixed (the unit tests check
#: those labels).
FIXED_RECORDINGS: dict[str, str | None] = {
    "spikewatch:last_recovery_seconds": (
        "max by (target, scenario) (spikewatch_last_recovery_seconds)"
    ),
    "spikewatch:recovery_seconds:median_7d": None,
    "spikewatch:spike_success_ratio": None,
}

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (not functions, labels, keywords)."""
    text = _STRING.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in _KEYWORDS
    }


def allowed_metric(name: str, recorded: set[str]) -> bool:
    """Return whether a rule may read ``name``."""
    if name.startswith("spikewatch:"):
        return name in recorded
    if name in OTHER_METRICS:
        return True
    base = name.removeprefix("spikewatch_")
    if base == name:
        return False
    return base in CONTRACT_METRICS or any(
        base.removesuffix(suffix) in CONTRACT_METRICS
        for suffix in ("_bucket", "_sum", "_count")
        if base.endswith(suffix)
    )


def github_anchors(markdown: str) -> set[str]:
    """Return the anchors GitHub makes from a Markdown file's headings."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(slug.replace(" ", "-"))
    return anchors


def run(command: list[str], cwd: Path | None = None) -> tuple[int, str]:
    """Run a checker; return its exit status and everything it printed."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, timeout=300
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    groups: list[dict[str, Any]] = document["groups"]
    return groups


def rules_of(groups: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for group in groups:
        yield from group["rules"]


@pytest.fixture(scope="module")
def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for rule in rules_of(groups) if "alert" in rule]


@pytest.fixture(scope="module")
def recorded(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["record"] for rule in rules_of(groups) if "record" in rule}


# --- promtool and amtool ------------------------------------------------------------------


def test_promtool_check_rules_is_clean() -> None:
    promtool = require_tool("promtool", PROMTOOL_PACKAGE)
    status, output = run([promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES)])
    assert status == 0, output
    assert "SUCCESS" in output, output
    assert not re.search(r"warn|duplicate", output, re.IGNORECASE), output


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool", PROMTOOL_PACKAGE)
    status, output = run([promtool, "test", "rules", str(RULE_TESTS)])
    assert status == 0, output
    assert "SUCCESS" in output, output


def test_example_prometheus_config_loads_the_rules(
    tmp_path: Path, groups: list[dict[str, Any]]
) -> None:
    """promtool checks the config and, through its relative rule_files, the rules file.

    It runs from an unrelated directory: the rule path is relative to the config file.
    """
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    (rule_file,) = config["rule_files"]
    assert (PROMETHEUS_CONFIG.parent / rule_file).resolve() == RULES.resolve()
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "spikewatch"
    assert config["global"]["scrape_interval"] == "15s"
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]

    promtool = require_tool("promtool", PROMTOOL_PACKAGE)
    status, output = run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], cwd=tmp_path)
    assert status == 0, output
    assert "1 rule files found" in output, output
    assert f"SUCCESS: {len(list(rules_of(groups)))} rules found" in output, output


def test_example_alertmanager_config_is_valid() -> None:
    amtool = require_tool("amtool", AMTOOL_PACKAGE)
    status, output = run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert status == 0, output
    assert "SUCCESS" in output, output


# --- the rules' conventions -----------------------------------------------------------------


def test_alerts_have_name_severity_and_annotations(alerts: list[dict[str, Any]]) -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    assert alerts
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"Spikewatch(?:[A-Z][a-z0-9]*)+", name), name
        assert alert["labels"]["severity"] in SEVERITIES, name
        assert "for" in alert, f"{name}: say `for: 0m` when no delay is meant"
        notes = alert["annotations"]
        # SpikewatchRecoveryRegressed also names the target versions (issue 17).
        versions = {"version", "version_before"} if name == "SpikewatchRecoveryRegressed" else set()
        assert set(notes) == {"summary", "description", "runbook_url", *versions}, name
        assert notes["summary"].strip(), name
        assert "{{" not in notes["summary"], f"{name}: the summary must be static"
        assert "{{" in notes["description"], f"{name}: the description must be templated"
        assert "$labels" in notes["description"], name
        anchor = name.lower()
        assert notes["runbook_url"] == f"{RUNBOOK_URL}#{anchor}", name
        assert anchor in anchors, f"{name}: no '## {name}' section in {RUNBOOK.name}"


def test_durations_and_ratios_are_humanized(alerts: list[dict[str, Any]]) -> None:
    """A $value in seconds or as a ratio reaches people as 5m 3s or 95%, not 303.2 or 0.95."""
    for alert in alerts:
        description = alert["annotations"]["description"]
        values = re.findall(r"\$value(?:\s*\|\s*(\w+))?", description)
        for function in values:
            assert function in {"humanizeDuration", "humanizePercentage", "printf"}, (
                alert["alert"],
                function,
            )


def test_rules_read_only_contract_metrics(groups: list[dict[str, Any]], recorded: set[str]) -> None:
    for rule in rules_of(groups):
        names = metric_names(str(rule["expr"]))
        assert names, rule
        unknown = {n for n in names if not allowed_metric(n, recorded)}
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads {unknown}"
        for text in rule.get("annotations", {}).values():
            queried = set(re.findall(r"\b(spikewatch[_:][\w:]*)", text))
            assert all(allowed_metric(n, recorded) for n in queried), (rule["alert"], queried)


def test_metric_name_parser() -> None:
    expr = (
        'sum by (target, scenario) (increase(spikewatch_runs_total{result="a|b"}[1h])) > 0'
        " unless on (target) spikewatch:x == +Inf and x offset 1d or 1e9 * y_bucket"
    )
    assert metric_names(expr) == {"spikewatch_runs_total", "spikewatch:x", "x", "y_bucket"}


def test_rules_read_what_the_exporter_exposes(groups: list[dict[str, Any]]) -> None:
    """Every spikewatch_* name a rule reads is in a real exposition (with one pair)."""
    metrics = SpikewatchMetrics(version="test")
    metrics.ensure_pairs([("chat", "avalanche", ["recovery"])])
    metrics.set_target_version("chat", "1.0", 0.0)  # a target with a version: in its config
    exposition = metrics.render(None)[0].decode()
    exposed = set(re.findall(r"^(\w+)[ {]", exposition, re.MULTILINE))
    read = {n for rule in rules_of(groups) for n in metric_names(str(rule["expr"]))}
    spikewatch_read = {n for n in read if n.startswith(("spikewatch_", "process_"))}
    assert spikewatch_read <= exposed, spikewatch_read - exposed


def test_recording_rules(groups: list[dict[str, Any]], recorded: set[str]) -> None:
    by_name = {rule["record"]: rule for rule in rules_of(groups) if "record" in rule}
    assert len(by_name) == len(recorded)
    for name, expr in FIXED_RECORDINGS.items():
        assert name in by_name, name
        if expr is not None:
            assert " ".join(str(by_name[name]["expr"]).split()) == expr
    for name in recorded:
        assert re.fullmatch(r"spikewatch:[a-z0-9_]+(?::[a-z0-9_]+)?", name), name


def test_every_alert_is_unit_tested_firing_and_not_firing(alerts: list[dict[str, Any]]) -> None:
    document = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            expected = check.get("exp_alerts") or []
            (fires if expected else quiet).add(check["alertname"])
            for alert in expected:
                assert "summary" in alert["exp_annotations"], check
    names = {alert["alert"] for alert in alerts}
    assert names <= fires, f"never tested firing: {names - fires}"
    assert names <= quiet, f"never tested staying quiet: {names - quiet}"


def test_alertmanager_routes_and_inhibitions_match_the_rules(alerts: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    route = config["route"]
    assert route["group_by"] == ["alertname", "target", "scenario"]
    routed = {m for child in route["routes"] for m in child["matchers"]}
    assert routed == {f'severity="{s}"' for s in SEVERITIES}
    receivers = {r["name"] for r in config["receivers"]}
    assert {route["receiver"]} | {c["receiver"] for c in route["routes"]} <= receivers
    assert any("webhook_configs" in r for r in config["receivers"])

    names = {alert["alert"] for alert in alerts}
    inhibits = {}
    for rule in config["inhibit_rules"]:
        (source,) = rule["source_matchers"]
        source_name = re.fullmatch(r'alertname="(\w+)"', source)
        assert source_name, source
        (target,) = rule["target_matchers"]
        target_names = re.fullmatch(r'alertname=~?"([\w|]+)"', target)
        assert target_names, target
        targets = set(target_names.group(1).split("|"))
        assert {source_name.group(1)} | targets <= names, rule
        inhibits[source_name.group(1)] = (targets, rule.get("equal", []))
    down_targets, down_equal = inhibits["SpikewatchTargetDownAtBaseline"]
    assert {"SpikewatchTargetDidNotRecover", "SpikewatchSpikeSuccessRatioLow"} <= down_targets
    assert "SpikewatchRecoveryRegressed" in down_targets
    assert down_equal == ["target", "scenario"]
    saturated_targets, _ = inhibits["SpikewatchProberSaturated"]
    assert down_targets | {"SpikewatchTargetDownAtBaseline"} <= saturated_targets
