"""Decide when a spike must stop opening connections because too many have failed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AbortRule:
    """Stop the spike once ``error_ratio`` of its finished attempts have failed.

    The rule only applies after ``min_attempts`` attempts have finished, so that one early
    failure does not stop a spike; ``error_ratio`` None disables it.
    """

    error_ratio: float | None
    min_attempts: int

    def __post_init__(self) -> None:
        # A ratio of 0 would abort on the first finished attempt, failed or not.
        if self.error_ratio is not None and not 0.0 < self.error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be in (0, 1], got {self.error_ratio}")
        if self.min_attempts < 1:
            raise ValueError(f"min_attempts must be >= 1, got {self.min_attempts}")

    def should_abort(self, finished: int, failed: int) -> bool:
        """Return whether to stop, given how many attempts have finished and failed so far."""
        if not 0 <= failed <= finished:
            raise ValueError(f"need 0 <= failed <= finished, got {failed} of {finished}")
        if self.error_ratio is None or finished < self.min_attempts:
            return False
        # Divide rather than multiply: 7 / 100 >= 0.07 holds, but 7 >= 0.07 * 100 does not
        # (0.07 * 100 rounds to 7.000000000000001).
        return failed / finished >= self.error_ratio
