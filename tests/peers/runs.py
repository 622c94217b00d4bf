"""Running the example configs of tests/peers/configs against the servers started here."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from spikewatch.config import SpikewatchConfig, load_config
from spikewatch.core.outcomes import RunResultKind
from spikewatch.core.result import RunResult
from spikewatch.engine.runner import execute_run
from tests.builders import make_prober, write_config
from tests.peers.servers import JsonPeer, LogPeer

#: The example configs (the README's "Real protocols: example configs").
CONFIGS = Path(__file__).resolve().parent / "configs"


def example(name: str) -> dict[str, Any]:
    """Return ``tests/peers/configs/<name>.yaml`` as a document."""
    document: dict[str, Any] = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return document


def on_port(url: str, port: int) -> str:
    """Return ``url`` on loopback port ``port`` (its path and query kept)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


def document_of(name: str, port: int, *, target: Any = None, **scenario: Any) -> dict[str, Any]:
    """Return example ``name`` with its target on ``port``; ``scenario`` (and ``target``)
    override fields of its first scenario (and target); a None value removes the field."""
    document = example(name)
    [entry] = document["targets"]
    entry["url"] = on_port(entry["url"], port)
    for fields, changes in ((entry, target or {}), (document["scenarios"][0], scenario)):
        fields.update(changes)
        for key in [key for key, value in changes.items() if value is None]:
            del fields[key]
    return document


def config_of(
    tmp_path: Path, name: str, port: int, *, target: Any = None, **scenario: Any
) -> SpikewatchConfig:
    """Write and load :func:`document_of` (a config file in ``tmp_path``)."""
    document = document_of(name, port, target=target, **scenario)
    return load_config(write_config(tmp_path / f"{name}.yaml", document))


async def run(config: SpikewatchConfig) -> RunResult:
    """Run the config's first scenario on its first target; return the result."""
    prober = make_prober(lag=10.0, lateness=10.0, cpu=1e6)
    report = await execute_run(config.targets[0], config.scenarios[0], prober)
    assert prober.registry.open == 0, "a run leaves no connection open"
    return report.result


def made(result: RunResult) -> int:
    """Return how many connections the run opened attempts for: every phase's."""
    stable = result.stable.connections if result.stable is not None else 0
    spike = result.spike.attempted if result.spike is not None else 0
    recovery = result.recovery.probes if result.recovery is not None else 0
    return result.baseline.probes + stable + spike + recovery


async def run_example(
    tmp_path: Path, name: str, peer: JsonPeer | LogPeer, ended: str
) -> tuple[RunResult, int, int]:
    """Run example ``name`` as shipped against ``peer``; check that it passed, and wait until
    the peer's account has one ``ended`` (an event, or a log pattern) per connection made.
    Return the result, the connections made, and the peer's mark from before the run."""
    mark = peer.mark()
    result = await run(config_of(tmp_path, name, peer.port))
    assert result.result == RunResultKind.PASSED, (result.message, result.errors)
    n = made(result)
    await peer.until(lambda: peer.tally(ended, mark) == n, f"{n} of {ended!r}")
    return result, n, mark
