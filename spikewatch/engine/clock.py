"""The clock every measurement is read from.

``time.monotonic()`` (CLOCK_MONOTONIC at full resolution), not ``loop.time()``: uvloop's
loop time counts whole milliseconds (libuv's ``uv_now``), too coarse for loopback
latencies and for most loop lag. Both are CLOCK_MONOTONIC, and the kernel's
monotonic clock is one per host, so these instants also serve as the loop's timer
deadlines and can be sent to worker processes as they are.
"""

from __future__ import annotations

import asyncio
import time

now = time.monotonic


async def sleep_until(when: float) -> None:
    """Sleep until :func:`now` reaches ``when`` (a monotonic instant), never less.

    Again while early: uvloop's millisecond timers wake up to ~1 ms before ``when``,
    which would record starts before their planned instant.
    """
    while (delay := when - now()) > 0:  # noqa: ASYNC110 - an instant, not an event
        await asyncio.sleep(delay)
