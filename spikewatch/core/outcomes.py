"""The fixed vocabularies of the contract: outcomes, phases, upgrade status codes."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How one connection attempt ended (the ``outcome`` label). Exactly one per attempt."""

    OK = "ok"
    DNS_ERROR = "dns_error"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    TLS_ERROR = "tls_error"
    HTTP_STATUS = "http_status"
    PROTOCOL_ERROR = "protocol_error"
    CLOSED = "closed"
    UNEXPECTED_MESSAGE = "unexpected_message"
    ABORTED = "aborted"
    ERROR = "error"


class Phase(StrEnum):
    """Which part of a run a connection belongs to (the ``phase`` label)."""

    BASELINE = "baseline"
    STABLE = "stable"
    SPIKE = "spike"
    RECOVERY = "recovery"


class RunResultKind(StrEnum):
    """The verdict of one run (the ``result`` label)."""

    PASSED = "passed"
    FAILED = "failed"
    TARGET_DOWN = "target_down"
    ABORTED = "aborted"
    INVALID = "invalid"
    ERROR = "error"


#: Non-101 upgrade answers are counted under one of these ``code`` label values.
UPGRADE_STATUS_CODES: tuple[str, ...] = (
    "400",
    "401",
    "403",
    "404",
    "429",
    "500",
    "502",
    "503",
    "504",
    "other",
)


def status_code_label(status: int) -> str:
    """Map an HTTP status to its bounded ``code`` label value."""
    text = str(status)
    return text if text in UPGRADE_STATUS_CODES else "other"
