"""Which event loop runs the prober: uvloop when it is there, asyncio's own otherwise.

uvloop (libuv under asyncio's API) roughly halves the loop's share of a connection's
CPU cost (bench/README.md has the figures), which is the difference between a prober
that keeps up with a spike and one whose own lag shows up as the target's latency. It is
a dependency wherever it builds (CPython on Linux and macOS); everywhere else, or when
``prober.event_loop: asyncio`` asks for it, the stdlib loop runs the same code.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from spikewatch.core.event_loop_choice import EventLoopChoice, uvloop_available
from spikewatch.errors import SpikewatchError

__all__ = ["EventLoopChoice", "LoopFactory", "loop_factory", "loop_name", "run", "uvloop_available"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_T = TypeVar("_T")


def _uvloop_factory() -> LoopFactory | None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_factory(choice: EventLoopChoice) -> tuple[str, LoopFactory | None]:
    """Return the loop's name and its factory (None: asyncio's default loop).

    ``auto`` takes uvloop when it can be imported, asyncio otherwise; ``uvloop`` insists.
    """
    if choice == "asyncio":
        return "asyncio", None
    factory = _uvloop_factory()
    if factory is not None:
        return "uvloop", factory
    if choice == "uvloop":
        raise SpikewatchError(
            "prober.event_loop: uvloop is not installed here; install it or choose asyncio"
        )
    return "asyncio", None


def run(main: Coroutine[Any, Any, _T], choice: EventLoopChoice) -> _T:
    """Run ``main`` to completion on the chosen loop, as :func:`asyncio.run` does."""
    _, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """Return ``uvloop`` or ``asyncio`` for a running loop."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
