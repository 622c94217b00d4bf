"""The ``storage`` section: where the daemon keeps its run history, and for how long."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection

__all__ = ["RetentionConfig", "StorageConfig"]


class RetentionConfig(ConfigSection):
    """How much run history is kept: the newest ``max_runs``, none older than ``max_age``."""

    max_runs: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Seconds, or a duration like ``720h`` (365 days at most).
    max_age: PositiveDuration = 30 * 86400.0


class StorageConfig(ConfigSection):
    """The run history's database.

    ``path`` is a directory; the database is ``runs.sqlite3`` in it. Without a path the
    history lives in memory only (as many runs as ``retention.max_runs``, at most 200) and
    is gone at the next start.

    ``fallback`` says what an unusable database at start (corrupt, unwritable, from a
    newer spikewatch) does: ``none`` (the default) stops the start with an error naming
    the file; ``memory`` logs that error and keeps the history in memory instead, as
    without a path, so that monitoring goes on while the evidence does not survive.
    """

    path: Path | None = None
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    fallback: Literal["none", "memory"] = "none"
