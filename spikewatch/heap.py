"""The process's heap: what the garbage collector walks, and what malloc gives back.

:func:`freeze_long_lived`: a full (generation 2) collection walks every object that can
hold references, and at rest a daemon already has ~120,000 of them (modules, the config,
metrics for 80 pairs): 25 ms with the event loop stopped, once or twice per spike of
3,000 connections, each time stamping every answer that waits as late. Frozen once the
process is set up, they are never walked again; the same spike's full collections took
5-7 ms instead of 25-42 ms (bench/avalanche.py, 3 runs each).

:func:`release_free_heap`: rendering the pairs' series builds tens of thousands of
short-lived strings and a body of megabytes; Python frees them at once, but glibc's malloc
keeps much of the freed heap for reuse (its trim threshold rises with every large free),
so an idle daemon's RSS stayed well above what it holds after a few scrapes.
``malloc_trim(0)`` hands those pages back. Outside glibc (musl, macOS) there is no such
call and this does nothing.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    # The process's own symbols (dlopen(NULL)): the C library it runs on is among them.
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_heap() -> bool:
    """Return the allocator's free memory to the system; False where that is not possible."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def freeze_long_lived() -> None:
    """Collect once, then move every object alive now out of the collector's reach.

    For objects that live as long as the process (call it once set up, not per run):
    a frozen object is never collected, so one that later becomes cyclic garbage stays.
    """
    gc.collect()
    gc.freeze()
