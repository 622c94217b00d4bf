"""Write the PrometheusRule of deploy/kubernetes/base from the rules file Prometheus uses.

The Prometheus Operator takes alert and recording rules as a PrometheusRule object whose
``spec.groups`` is a rules file's ``groups``. This script builds that object from
deploy/prometheus/rules/spikewatch.rules.yml, so that there is one copy of the rules to
keep; tests/deploy/test_kubernetes.py fails when the committed object is out of date.

    python3 deploy/kubernetes/prometheusrule.py           # regenerate
    python3 deploy/kubernetes/prometheusrule.py --check   # exit 1 if out of date

Needs only the standard library and PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/spikewatch.rules.yml"
OUTPUT = ROOT / "deploy/kubernetes/base/prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/rules/spikewatch.rules.yml by
# deploy/kubernetes/prometheusrule.py: do not edit. After changing the rules, regenerate:
#   python3 deploy/kubernetes/prometheusrule.py
# (tests/deploy/test_kubernetes.py fails while this file is out of date).
"""


class _Dumper(yaml.SafeDumper):
    """A dumper that writes multi-line strings (PromQL, descriptions) as ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself where a block cannot hold the value.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def load_groups(rules_text: str) -> list[Any]:
    """Return the ``groups`` of a Prometheus rules file; raise ValueError if it has none."""
    document = yaml.safe_load(rules_text)
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not groups:
        raise ValueError("a rules file must be a mapping with a non-empty list of groups")
    return groups


def render(rules_text: str) -> str:
    """Return the PrometheusRule manifest for a rules file's text."""
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "spikewatch", "labels": {"app.kubernetes.io/name": "spikewatch"}},
        "spec": {"groups": load_groups(rules_text)},
    }
    body = yaml.dump(
        manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000, indent=2
    )
    return HEADER + body


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Regenerate the PrometheusRule, or with ``--check`` report whether it is current."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file is out of date; write nothing"
    )
    args = parser.parse_args(argv)
    try:
        fresh = render(RULES.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"prometheusrule.py: {_shown(RULES)}: {exc}", file=sys.stderr)
        return 2
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else None
    if args.check:
        if current != fresh:
            print(
                f"{_shown(OUTPUT)} is out of date: run python3 deploy/kubernetes/prometheusrule.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != fresh:
        OUTPUT.write_text(fresh, encoding="utf-8")
        print(f"wrote {_shown(OUTPUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
