"""A target's version as a run records it: cleaned, bounded, or ``unknown`` with a reason.

Pure: the engine hands in what it read (header values of the baseline probes' 101
answers, captures, or the body of a version URL) and gets back a :class:`TargetVersion`.
A version becomes a metric label (``spikewatch_target_info{version}``) and a stored
column, so it is bounded in length and character set; anything else is ``unknown``,
never a failed run (issue 17).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_VERSION_CHARS",
    "UNKNOWN",
    "TargetVersion",
    "clean_version",
    "from_json",
    "from_regex",
    "from_values",
]

#: What a run records when the version could not be read.
UNKNOWN: Final = "unknown"
MAX_VERSION_CHARS: Final = 64
_ALLOWED = re.compile(r"[A-Za-z0-9._+:/@-]{1,64}")


@dataclass(frozen=True, slots=True)
class TargetVersion:
    """The version a run measured; ``reason`` says why it is ``unknown`` (or a caveat)."""

    value: str
    reason: str | None = None

    @property
    def known(self) -> bool:
        """Whether a version was read."""
        return self.value != UNKNOWN


def clean_version(raw: str | None, where: str) -> TargetVersion:
    """Return ``raw`` (stripped) when it is a version we can record, else ``unknown``.

    ``where`` names the source in the reason (``header X-App-Version``, say).
    """
    if raw is None:
        return TargetVersion(UNKNOWN, f"{where}: no value")
    text = raw.strip()
    if not text:
        return TargetVersion(UNKNOWN, f"{where}: empty")
    if len(text) > MAX_VERSION_CHARS:
        return TargetVersion(UNKNOWN, f"{where}: longer than {MAX_VERSION_CHARS} characters")
    if not _ALLOWED.fullmatch(text) or text == UNKNOWN:
        return TargetVersion(UNKNOWN, f"{where}: not a version (A-Z a-z 0-9 . _ + - : / @ only)")
    return TargetVersion(text)


def from_values(values: Iterable[str | None], where: str) -> TargetVersion:
    """Return the version most of ``values`` (one per baseline probe) report.

    Probes that did not get a value (no 101 answer, no header) do not vote; when probes
    disagree (a rolling deploy under way), the most frequent value wins, the latest of
    equally frequent ones, and the reason says how they split.
    """
    readings = [clean_version(v, where) for v in values if v is not None]
    known = [r.value for r in readings if r.known]
    if not known:
        if readings:
            return readings[-1]
        return TargetVersion(UNKNOWN, f"{where}: no probe's answer carried it")
    counts = Counter(known)
    best = max(counts.values())
    value = next(v for v in reversed(known) if counts[v] == best)
    if len(counts) == 1:
        return TargetVersion(value)
    split = ", ".join(f"{v} ({n})" for v, n in counts.most_common())
    return TargetVersion(value, f"{where}: the probes disagreed: {split}")


def from_json(body: bytes, path: str, where: str) -> TargetVersion:
    """Return the scalar at the dotted ``path`` of the JSON document ``body``."""
    try:
        node: object = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return TargetVersion(UNKNOWN, f"{where}: the answer is not JSON")
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return TargetVersion(UNKNOWN, f"{where}: no {path} in the answer")
    if isinstance(node, bool) or not isinstance(node, str | int | float):
        return TargetVersion(UNKNOWN, f"{where}: {path} is not a string or a number")
    return clean_version(str(node), where)


def from_regex(body: bytes, pattern: re.Pattern[str], where: str) -> TargetVersion:
    """Return the ``version`` group of the first match of ``pattern`` in ``body``."""
    found = pattern.search(body.decode("utf-8", "replace"))
    if found is None or found.group("version") is None:
        return TargetVersion(UNKNOWN, f"{where}: the answer did not match the regex")
    return clean_version(found.group("version"), where)
