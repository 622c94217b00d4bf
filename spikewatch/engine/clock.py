"""The clock every measurement is read from.

``time.monotonic()`` (CLOCK_MONOTONIC at full resolution), not ``loop.time()``: uvloop's
loop time counts whole milliseconds and is read once per loop iteration, too coarse for
loopback latencies and blind to most loop lag. Both are CLOCK_MONOTONIC, and the kernel's
monotonic clock is one per host, so these instants also serve as the loop's timer
deadlines and can be sent to worker processes as they are.
"""

from __future__ import annotations

import time

now = time.monotonic
