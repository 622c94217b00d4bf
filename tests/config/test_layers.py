"""The config sits below the engine: loading it never imports the engine."""

from __future__ import annotations

import subprocess
import sys


def test_the_config_package_imports_nothing_from_the_engine() -> None:
    """A fresh interpreter that loads and validates a config has no spikewatch.engine module."""
    code = """
import sys
from spikewatch.config import load_config, parse_config, render_effective_config
from spikewatch.config import secret_files, env_source, yaml_source
config = parse_config({"targets": [{"name": "t", "url": "ws://127.0.0.1:9/"}],
                       "scenarios": [{"name": "s", "spike": {"connections": 1}}]})
render_effective_config(config)
print(" ".join(sorted(m for m in sys.modules if m.startswith("spikewatch.engine"))))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == []
