"""Shared test settings: one factor scales every timeout on slow machines."""

from __future__ import annotations

import os

#: Multiply every test timeout by this (``SPIKEWATCH_TEST_TIMEOUT_FACTOR``) on slow machines.
TIMEOUT_FACTOR = float(os.environ.get("SPIKEWATCH_TEST_TIMEOUT_FACTOR", "1"))


def scaled(seconds: float) -> float:
    """Return a test timeout scaled by the machine's factor."""
    return seconds * TIMEOUT_FACTOR
