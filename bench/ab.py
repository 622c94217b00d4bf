"""Before and after in one run: spikewatch's CPU per connection from two source trees.

An engine change is judged by the per-connection CPU of the full cycle, measured in the
same run as the code it replaces (these machines are shared and noisy: only ratios taken
in one run compare). Each burst runs in a fresh process (``bench/clients.py burst``) with
``PYTHONPATH`` set to one tree, alternating A, B and the hand-written floor (A B F A B F …)
so that drift hits all three alike; per connection is the marginal between two sizes.

``python bench/ab.py --before /path/to/old/checkout [--after .] [--rounds 5] [--loop uvloop]
[--conversation]`` (``--conversation``: a 3-step conversation's cost per connection too).

The target is ``bench/target.js`` (Node ``ws``, installed by ``npm ci`` the first time, as
``bench/run.py`` does). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from run import BENCH, BenchError, install, run_script, target, tools

ROOT = BENCH.parent


def burst(tree: Path, client: str, port: int, size: int, args: argparse.Namespace) -> float:
    """Return the CPU seconds of one burst of ``client`` imported from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    size_args = (str(port), str(size), str(args.concurrency), "--loop", args.loop)
    figures = run_script("clients.py", "burst", client, *size_args, env=env)
    return float(figures["cpu_seconds"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Return each side's per-connection CPU (median of rounds) and the ratios."""
    node, npm = tools()
    install(npm)
    small, big = args.sizes
    sides = {
        "before": (args.before.resolve(), "spikewatch"),
        "after": (args.after.resolve(), "spikewatch"),
        "floor": (args.after.resolve(), "floor"),
    }
    if args.conversation:
        # A three-round-trip conversation (bench/clients.py THREE_STEPS), reported beside.
        sides["conversation"] = (args.after.resolve(), "spikewatch-3step")
    marginals: dict[str, list[float]] = {name: [] for name in sides}
    with target(node) as port:
        burst(args.after, "floor", port, small, args)  # warm Node's JIT
        for round_ in range(args.rounds):
            cpu: dict[tuple[str, int], float] = {}
            for size in (small, big):
                for name, (tree, client) in sides.items():
                    print(f"== round {round_ + 1} {name} x{size}", file=sys.stderr)
                    cpu[(name, size)] = burst(tree, client, port, size, args)
            for name in sides:
                marginals[name].append((cpu[(name, big)] - cpu[(name, small)]) / (big - small))
    per = {name: statistics.median(values) for name, values in marginals.items()}
    extra = {}
    if args.conversation:
        extra = {
            "conversation_over_after": round(per["conversation"] / per["after"], 3),
            "conversation_over_floor": round(per["conversation"] / per["floor"], 3),
        }
    return {
        "loop": args.loop,
        "rounds": args.rounds,
        "cpu_per_connection_us": {name: round(v * 1e6, 2) for name, v in per.items()},
        "rounds_us": {n: [round(v * 1e6, 2) for v in vs] for n, vs in marginals.items()},
        "after_over_before": round(per["after"] / per["before"], 3),
        "before_over_floor": round(per["before"] / per["floor"], 3),
        "after_over_floor": round(per["after"] / per["floor"], 3),
        **extra,
    }


def main(argv: list[str]) -> int:
    """Run the comparison and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the old checkout")
    parser.add_argument("--after", type=Path, default=ROOT, help="the new checkout (here)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 3000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--conversation",
        action="store_true",
        help="also measure a 3-step conversation (the after tree) beside the welcome/echo",
    )
    args = parser.parse_args(argv)
    for tree in (args.before, args.after):
        if not (tree / "spikewatch" / "__init__.py").is_file():
            parser.error(f"{tree} is not a spikewatch checkout")
    try:
        print(json.dumps(measure(args), indent=2))
    except BenchError as exc:
        print(f"bench/ab.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
