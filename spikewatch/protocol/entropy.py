"""Random bytes for keys and masks, read from the OS in bulk.

RFC 6455 wants a fresh, unpredictable ``Sec-WebSocket-Key`` per connection (§4.1) and
mask per frame (§5.3). Both come from ``os.urandom``, but one system call per 4-byte
mask is a measurable share of a connection's cost, so bytes are drawn from a pool
refilled with one large read; no byte is ever handed out twice.
"""

from __future__ import annotations

import os

#: Bytes fetched per refill: 256 masks or so.
POOL_BYTES = 1024


class _Pool:
    __slots__ = ("_data", "_pos")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            self._data = os.urandom(max(POOL_BYTES, n))
            pos, end = 0, n
        self._pos = end
        return self._data[pos:end]

    def discard(self) -> None:
        self._data = b""
        self._pos = 0


_POOL = _Pool()
# A forked child must not hand out the bytes its parent already used or will use.
os.register_at_fork(after_in_child=_POOL.discard)


#: ``random_bytes(n)``: ``n`` bytes from the OS's random source, never handed out before.
random_bytes = _POOL.take
