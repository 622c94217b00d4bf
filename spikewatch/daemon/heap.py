"""Give memory that the C allocator holds free back to the operating system.

Rendering the pairs' series builds tens of thousands of short-lived strings and a body
of megabytes; Python frees them at once, but glibc's malloc keeps most of the freed heap
for reuse (its trim threshold rises with every large free), so an idle daemon's RSS stayed
~15 MB above what it holds after a few scrapes. ``malloc_trim(0)`` hands those pages
back. Outside glibc (musl, macOS) there is no such call and this does nothing.
"""

from __future__ import annotations

import ctypes
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
