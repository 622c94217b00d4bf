"""The README's "Real protocols: example configs" shows the configs tests/peers runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.peers.runs import CONFIGS, example

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_each_tested_example() -> None:
    """Each YAML block of the section is the targets of one tests/peers/configs file, named."""
    text = README.read_text()
    section = text.split("### Real protocols: example configs\n", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(
        r"\(`tests/peers/configs/([\w-]+)\.yaml`\)\n\n```yaml\n(.*?)```", section, re.S
    )
    assert sorted(name for name, _ in shown) == sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    for name, block in shown:
        assert yaml.safe_load(block) == {"targets": example(name)["targets"]}, name
