"""What a spikewatch process loads: PyJWT and cryptography only once a JWT is in use."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("jwt", "cryptography")


def loaded_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; return which of HEAVY it left in sys.modules."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_the_daemon_and_its_commands_do_not_load_pyjwt() -> None:
    """Every command's modules, and a spec for a target without auth, leave PyJWT unloaded.

    PyJWT's import loads cryptography, about 9 MB of an idle daemon's RSS.
    """
    code = """
import spikewatch.cli, spikewatch.daemon.lifecycle, spikewatch.engine.worker_main, spikewatch.demo
from spikewatch.config import parse_config
from spikewatch.engine.spec import build_connection_spec
config = parse_config({"targets": [{"name": "t", "url": "ws://127.0.0.1:9/"}],
                       "scenarios": [{"name": "s", "spike": {"connections": 1}}]})
spec = build_connection_spec(config.targets[0], "127.0.0.1")
spec.render_request(b"0123456789abcdef", 1)
"""
    assert loaded_after(code) == []


def test_a_target_with_a_jwt_loads_it() -> None:
    """The lazy import is there when needed: a JWT target's spec mints with PyJWT."""
    code = """
from spikewatch.config import parse_config
from spikewatch.engine.spec import build_connection_spec
auth = {"jwt": {"algorithm": "HS256", "secret": "0123456789abcdef0123456789abcdef"}}
config = parse_config({"targets": [{"name": "t", "url": "ws://127.0.0.1:9/", "auth": auth}],
                       "scenarios": [{"name": "s", "spike": {"connections": 1}}]})
spec = build_connection_spec(config.targets[0], "127.0.0.1")
request, _ = spec.render_request(b"0123456789abcdef", 1)
assert b"Bearer ey" in request, request
"""
    assert loaded_after(code) == list(HEAVY)
