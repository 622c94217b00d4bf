"""The target version a run records: cleaned, bounded, voted, read from JSON or a regex."""

from __future__ import annotations

import re

import pytest

from spikewatch.core.version import (
    MAX_VERSION_CHARS,
    UNKNOWN,
    TargetVersion,
    clean_version,
    from_json,
    from_regex,
    from_values,
)

WHERE = "header X-App-Version"


@pytest.mark.parametrize("raw", ["1.4.2", " v2.0.0-rc.1+build.7 ", "sha256:abc/def@main", "a_b"])
def test_versions_in_the_character_set_are_kept(raw: str) -> None:
    """A version of letters, digits and . _ + - : / @ is kept, stripped."""
    assert clean_version(raw, WHERE) == TargetVersion(raw.strip())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "no value"),
        ("   ", "empty"),
        ("x" * (MAX_VERSION_CHARS + 1), "longer than 64 characters"),
        ("1.0 beta", "not a version"),
        ('1.0"}', "not a version"),
        ("unknown", "not a version"),
    ],
)
def test_anything_else_is_unknown_with_its_reason(raw: str | None, reason: str) -> None:
    """Unbounded or odd values never become a label: unknown, and why."""
    version = clean_version(raw, WHERE)
    assert version.value == UNKNOWN
    assert not version.known
    assert version.reason is not None
    assert version.reason.startswith(f"{WHERE}: {reason}")


def test_the_probes_agree() -> None:
    """Probes that agree give their version without a caveat; probes without a value do not vote."""
    assert from_values(["2.0", None, "2.0"], WHERE) == TargetVersion("2.0")


def test_the_probes_disagree_during_a_rolling_deploy() -> None:
    """The most frequent version wins (the latest of a tie), and the reason says the split."""
    version = from_values(["1.0", "2.0", "2.0", "1.0"], WHERE)
    assert version.value == "1.0"
    assert version.reason == f"{WHERE}: the probes disagreed: 1.0 (2), 2.0 (2)"
    assert from_values(["1.0", "2.0", "2.0"], WHERE).value == "2.0"


def test_no_probe_carried_it() -> None:
    """No value at all, or only unusable ones: unknown with the reason."""
    assert from_values([None, None], WHERE) == TargetVersion(
        UNKNOWN, f"{WHERE}: no probe's answer carried it"
    )
    assert (
        from_values(["bad value"], WHERE).reason
        == f"{WHERE}: not a version (A-Z a-z 0-9 . _ + - : / @ only)"
    )


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        (b'{"build": {"version": "3.1"}}', "build.version", TargetVersion("3.1")),
        (b'{"items": [{"tag": 7}]}', "items.0.tag", TargetVersion("7")),
        (b"not json", "v", TargetVersion(UNKNOWN, "url /v: the answer is not JSON")),
        (b"\xff", "v", TargetVersion(UNKNOWN, "url /v: the answer is not JSON")),
        (b'{"a": 1}', "b", TargetVersion(UNKNOWN, "url /v: no b in the answer")),
        (b'{"a": [1]}', "a.3", TargetVersion(UNKNOWN, "url /v: no a.3 in the answer")),
        (b'{"a": true}', "a", TargetVersion(UNKNOWN, "url /v: a is not a string or a number")),
        (b'{"a": {"b": 1}}', "a", TargetVersion(UNKNOWN, "url /v: a is not a string or a number")),
    ],
)
def test_json_paths(body: bytes, path: str, expected: TargetVersion) -> None:
    """A dotted path reads a scalar (integers index lists); anything else is unknown."""
    assert from_json(body, path, "url /v") == expected


def test_regex() -> None:
    """The version group of the first match; no match is unknown."""
    pattern = re.compile(r"version: (?P<version>\S+)|(?P<other>x)")
    assert from_regex(b"app version: 9.9.9\n", pattern, "url /v") == TargetVersion("9.9.9")
    assert from_regex(b"nothing", pattern, "url /v").reason == (
        "url /v: the answer did not match the regex"
    )
    assert from_regex(b"x", pattern, "url /v").value == UNKNOWN
