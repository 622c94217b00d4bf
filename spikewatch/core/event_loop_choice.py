"""The event-loop choice of ``prober.event_loop``, and whether uvloop can be had here.

Below both the config (which refuses ``uvloop`` where it is missing) and the engine
(which starts the loop): :mod:`spikewatch.engine.eventloop` runs the choice.
"""

from __future__ import annotations

import importlib
from typing import Literal

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]


def uvloop_available() -> bool:
    """Whether uvloop can be imported here."""
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return False
    return True
