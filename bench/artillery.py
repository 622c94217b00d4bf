"""Artillery (npm ``artillery``, its ``ws`` engine) as one of the clients compared.

One measurement is one ``artillery run`` of a generated script against the bench target:
N virtual users, each one connection that does what the Python clients do:

1. connect and upgrade (Artillery's engine uses the ``ws`` package, 7.x in Artillery 2),
2. ``wait`` for a message matching ``$.type == "welcome"`` (JSON-parsed, JSONPath match),
3. ``send`` the echo payload and wait for a reply matching ``$.type == "ping"``,
4. close: the engine calls ``ws.close()`` when the flow ends and does not wait for the
   closing handshake (the process finishes it before it exits, so its CPU is counted).

Every arrival falls within one short phase (:func:`phase_ms`), so that Artillery opens
them as fast as it can, all in flight at once. Its arrival timer busy-waits while a
phase runs (``nanotimer`` spins on ``setImmediate`` for intervals under 25 ms: one core
for the phase's length); both sizes of a comparison share the same phase length, so
that cost, like start-up, cancels in the marginal.

CPU is the whole Artillery process's (its worker threads included): ``RUSAGE_CHILDREN``
of this process around the run. A run counts only if Artillery says every virtual user
was created and completed, none failed, and every message was sent and received.
Telemetry is off (``ARTILLERY_DISABLE_TELEMETRY``) and ``loopback_only.cjs`` refuses
any connection that is not to the loopback interface.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from clients import ECHO_PAYLOAD

BENCH = Path(__file__).resolve().parent
ARTILLERY = BENCH / "node_modules" / "artillery" / "bin" / "run"
GUARD = BENCH / "loopback_only.cjs"
#: No Artillery run may take longer than this (seconds).
RUN_TIMEOUT = 180.0
#: The phase's length aims at this much per connection of the bigger size.
PHASE_US_PER_CONNECTION = 10
#: The longest phase accepted (ms); sizes whose common phase would be longer are refused.
MAX_PHASE_MS = 10_000


class ArtilleryError(Exception):
    """Artillery is missing, failed, or did not complete every virtual user."""


def _arrivals(phase: float, count: int) -> int:
    """Return how many arrivals Artillery 2 makes for ``arrivalCount: count`` over ``phase`` ms.

    The same float arithmetic as Artillery's ``phases.js`` and the ``arrivals`` package
    (``ms('<phase>ms') / 1000`` seconds; a tick of ``floor(interval * 1000)`` µs; as many
    ticks as fit in the phase), so that a phase that would make a different count than
    asked for is never used.
    """
    duration_ms = (phase / 1000) * 1000
    tick_us = math.floor((duration_ms / count) * 1000)
    if tick_us <= 0:
        return -1
    return math.floor((duration_ms * 1000) / tick_us)


def phase_ms(sizes: list[int]) -> float:
    """Return one phase length (ms) in which Artillery makes exactly each size's arrivals."""
    step = math.lcm(*sizes)  # in µs: a tick of a whole number of µs for every size
    multiple = max(1, round(max(sizes) * PHASE_US_PER_CONNECTION / step))
    for m in range(multiple, multiple + 100):
        phase = step * m / 1000
        if phase > MAX_PHASE_MS:
            break
        if all(_arrivals(phase, n) == n for n in sizes):
            return phase
    raise ArtilleryError(
        f"no Artillery phase under {MAX_PHASE_MS} ms gives exactly {sizes} arrivals; "
        "choose sizes with a small least common multiple (e.g. 1000 3000)"
    )


def script(port: int, connections: int, phase: float) -> dict[str, object]:
    """Return the Artillery script of one measurement (see the module's docstring)."""
    return {
        "config": {
            "target": f"ws://127.0.0.1:{port}/",
            "phases": [{"duration": f"{phase:g}ms", "arrivalCount": connections}],
            "ws": {"perMessageDeflate": False},
        },
        "scenarios": [
            {
                "engine": "ws",
                "flow": [
                    {"wait": {"match": {"json": "$.type", "value": "welcome"}}},
                    {
                        "send": {
                            "payload": ECHO_PAYLOAD,
                            "match": {"json": "$.type", "value": "ping"},
                        }
                    },
                ],
            }
        ],
    }


def check_report(report: dict[str, object], connections: int) -> dict[str, int]:
    """Return Artillery's counters; raise unless every virtual user did the whole flow."""
    aggregate = report.get("aggregate")
    if not isinstance(aggregate, dict) or not isinstance(aggregate.get("counters"), dict):
        raise ArtilleryError("the report has no aggregate counters")
    counters: dict[str, int] = aggregate["counters"]
    expected = {
        "vusers.created": connections,
        "vusers.completed": connections,
        "vusers.failed": 0,
        "websocket.messages_sent": connections,
        "websocket.messages_received": 2 * connections,
    }
    wrong = {k: counters.get(k, 0) for k, v in expected.items() if counters.get(k, 0) != v}
    errors = {k: v for k, v in counters.items() if k.startswith("errors.")}
    if wrong or errors:
        raise ArtilleryError(
            f"Artillery x{connections} did not complete: expected {expected}, "
            f"got {wrong or 'those'}; errors {errors}"
        )
    return counters


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(node: str, port: int, connections: int, phase: float) -> dict[str, object]:
    """Run Artillery once; return its CPU (whole process), wall time and counters."""
    if not ARTILLERY.is_file():
        raise ArtilleryError(f"{ARTILLERY} is missing: run npm ci in bench/")
    env = {
        **os.environ,
        "ARTILLERY_DISABLE_TELEMETRY": "true",
        "NODE_OPTIONS": f"--require {GUARD}",
    }
    with tempfile.TemporaryDirectory(prefix="spikewatch-artillery-") as tmp:
        path, out = Path(tmp) / "script.yml", Path(tmp) / "report.json"
        # JSON is YAML: the script is written as JSON so that no YAML quoting can bite.
        path.write_text(json.dumps(script(port, connections, phase)))
        cpu_before, wall_before = _children_cpu(), time.perf_counter()
        done = subprocess.run(  # noqa: S603 - our pinned Artillery, a generated script
            [node, str(ARTILLERY), "run", "--quiet", "--output", str(out), str(path)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
            env=env,
            cwd=tmp,
        )
        wall, cpu = time.perf_counter() - wall_before, _children_cpu() - cpu_before
        if done.returncode != 0 or not out.is_file():
            raise ArtilleryError(
                f"artillery x{connections} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        counters = check_report(json.loads(out.read_text()), connections)
    refused = [line for line in done.stderr.splitlines() if line.startswith("loopback-only:")]
    return {
        "mode": "burst",
        "client": "artillery",
        "loop": "node",
        "connections": connections,
        "concurrency": connections,
        "phase_ms": phase,
        "ok": counters["vusers.completed"],
        "failed": 0,
        "failures": [],
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "counters": counters,
        "refused_non_loopback": refused,
    }
