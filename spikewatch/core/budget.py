"""How a run's connections share ``limits.max_connections`` with its own probes."""

from __future__ import annotations

from typing import Final

#: Slots a run's spike and stable connections leave free for its own baseline and
#: recovery probes, so that a scenario sized up to the limit does not refuse its own
#: probes (which would read as a target that never recovers). The config checks
#: scenarios against it; the engine's connection registry keeps it free.
PROBE_RESERVE: Final = 4
