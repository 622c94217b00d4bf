"""Tests of the deployment manifests under deploy/, and the helpers both modules share.

A config is checked the way its container reads it: :func:`container_files` lays the
files that the manifests mount (config, secrets) out under a temporary root, and
:func:`rebase_files` points the config's ``*_file`` paths there, so that a path the
manifests do not mount fails the config check as it would fail the daemon.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: The rules file Prometheus loads; the Kubernetes PrometheusRule is generated from it.
RULES = DEPLOY / "prometheus" / "rules" / "spikewatch.rules.yml"


def rule_jobs() -> set[str]:
    """Return the ``job`` label values the shipped rules match (``up{job="..."}``)."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    exprs = [str(rule["expr"]) for group in groups for rule in group["rules"]]
    return {job for expr in exprs for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr)}


def require_tool(command: str, package: str) -> str:
    """Return the path of ``command`` (the venv's own first); fail naming ``package``."""
    beside = Path(sys.executable).parent / command
    found = str(beside) if beside.exists() else shutil.which(command)
    if found is None:
        pytest.fail(f"{command} is not installed: these tests need {package}", pytrace=False)
    return found


def file_fields(node: Any, at: str = "") -> dict[str, str]:
    """Return every ``*_file`` value of a config document that is set, by field path."""
    found: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = f"{at}.{key}" if at else str(key)
            if str(key).endswith("_file") and isinstance(value, str):
                found[path] = value
            else:
                found.update(file_fields(value, path))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found.update(file_fields(item, f"{at}[{i}]"))
    return found


def rebase_files(document: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """Return a copy of a config whose absolute ``*_file`` paths point under ``root``."""

    def rebase(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {
                key: (
                    str(root / PurePosixPath(value).relative_to("/"))
                    if str(key).endswith("_file")
                    and isinstance(value, str)
                    and value.startswith("/")
                    else rebase(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rebase(item) for item in node]
        return node

    return rebase(copy.deepcopy(dict(document)))


def container_files(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (the container's absolute path -> content) under ``root``."""
    for name, content in files.items():
        path = root / PurePosixPath(name).relative_to("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root
