"""Compare two target versions from the stored run history: the API's and the CLI's.

The statistics are the pure core's (:mod:`spikewatch.core.compare`); this reads each
version's newest runs from the store and words the result for a terminal.
"""

from __future__ import annotations

from typing import Final

from spikewatch.core.compare import ALPHA, Comparison, compare_versions
from spikewatch.daemon.run_store import RunStore

__all__ = ["COMPARE_RUNS", "format_comparison", "stored_comparison"]

#: The newest runs of each version that a comparison reads.
COMPARE_RUNS: Final = 200

_VERDICTS: Final = {
    "different": f"DIFFERENT (p < {ALPHA:g})",
    "not_different": "within the run-to-run spread",
    "too_few_runs": "too few runs to tell (4 of each needed)",
}


def stored_comparison(
    store: RunStore, target: str, scenario: str, version: str, against: str
) -> Comparison:
    """Compare the newest stored runs of ``version`` with those of ``against``."""
    return compare_versions(
        target,
        scenario,
        version,
        against,
        store.finished_of_version(target, scenario, version, limit=COMPARE_RUNS),
        store.finished_of_version(target, scenario, against, limit=COMPARE_RUNS),
    )


def format_comparison(comparison: Comparison) -> str:
    """Return the comparison as lines for a terminal."""
    doc = comparison.as_dict()
    lines = [
        f"{doc['target']} / {doc['scenario']}: version {doc['version']} against {doc['against']}"
        f" ({doc['method']}, alpha {ALPHA:g})"
    ]
    for name, figure in doc["figures"].items():
        mine, theirs = figure["version"], figure["against"]
        p = "" if figure["p_value"] is None else f", p = {figure['p_value']:.4g}"
        lines.append(
            f"  {name}: median {mine['median']} (worst {mine['worst']}, {mine['runs']} runs)"
            f" against {theirs['median']} (worst {theirs['worst']}, {theirs['runs']} runs)"
            f": {_VERDICTS[figure['verdict']]}{p}"
        )
    return "\n".join(lines)
