"""The HTTP server's limits against hostile or broken clients (issue 12, items 4 and 6).

aiohttp serves the API, ``/metrics`` and the status page; this module is what sits
between it and the socket:

- **A request head within** :data:`HEAD_TIMEOUT` **of connecting**, and a later one
  within :data:`HEAD_TIMEOUT` of its first byte. aiohttp has no header-read timeout: a
  client sending one header byte every few seconds held its connection forever.
- **Idle keep-alive for** :data:`KEEPALIVE_TIMEOUT` (aiohttp's default is an hour).
- **At most** :data:`MAX_CONNECTIONS` **connections at once** (and never more than a
  quarter of the process's descriptors): one past the bound is closed as soon as it is
  accepted, so that idle clients cannot take every descriptor from the runs (EMFILE).
- **A malformed request is logged in one line** naming the peer and the kind of error.
  aiohttp logged it at ERROR with a traceback quoting the raw header, an API token
  with a stray CR included; its 400 body quoted it too.
- **The same security headers on every answer**, malformed-request answers included.

Log lines of each kind are rate-limited (:class:`LogBudget`) so that a flood cannot
flood the log; each says how many of its kind it stands for.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

__all__ = [
    "HEAD_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "MAX_CONNECTIONS",
    "SECURITY_HEADERS",
    "GuardedAppRunner",
    "HttpLimits",
    "LogBudget",
    "http_limits",
]

log = logging.getLogger(__name__)

#: Seconds from connecting, or from a later head's first byte, to the complete request
#: head. A real client sends its head at once; a browser's speculative connection that
#: sends nothing is closed too.
HEAD_TIMEOUT: Final = 10.0
#: Seconds a kept-alive connection may stay idle: longer than a 60 s scrape interval,
#: so that a scraper reuses its connection instead of racing the close (nginx's 75 s).
KEEPALIVE_TIMEOUT: Final = 75.0
#: Connections served at once: scrapers, probes and a few people need a handful.
MAX_CONNECTIONS: Final = 256
#: Header lines per request (aiohttp allows 128 of up to 8 KiB each, 1 MiB a head): no
#: client of this API sends more than 20; 32 keeps the worst head at 256 KiB.
MAX_HEADERS: Final = 32
#: Seconds between two log lines of one kind past its budget.
REPORT_INTERVAL: Final = 60.0
#: Malformed-request lines logged per :data:`REPORT_INTERVAL` before they are counted.
MALFORMED_LINES_PER_INTERVAL: Final = 10

#: Sent with every answer: no sniffing, no caching of live data, no referrer, no framing.
SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# What each parse error is called in the log: the kind, never the exception's message,
# which quotes the offending line or header value.
_KINDS: Final[tuple[tuple[type[HttpProcessingError], str], ...]] = (
    (LineTooLong, "line too long"),
    (InvalidHeader, "invalid header"),
    (BadHttpMethod, "bad method"),
    (BadStatusLine, "bad request line"),
    (BadHttpMessage, "bad message"),
)


def error_kind(exc: HttpProcessingError) -> str:
    """Name the kind of a parse error without quoting anything the client sent."""
    for cls, kind in _KINDS:
        if isinstance(exc, cls):
            return kind
    return f"HTTP error {exc.code}"


@dataclass(frozen=True)
class HttpLimits:
    """The bounds the HTTP server applies to its clients; seconds and counts."""

    head_timeout: float = HEAD_TIMEOUT
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS


def http_limits(fd_limit: int | None = None) -> HttpLimits:
    """Return the default limits, the bound no more than a quarter of the descriptors.

    ``fd_limit`` is the process's descriptor limit, read from ``RLIMIT_NOFILE`` if not given.
    """
    if fd_limit is None:
        fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    bound = MAX_CONNECTIONS
    if fd_limit != resource.RLIM_INFINITY:
        bound = min(bound, max(8, fd_limit // 4))
    return HttpLimits(max_connections=bound)


@dataclass
class LogBudget:
    """Allow a few log lines of one kind per interval and count the ones held back."""

    lines: int = 1
    interval: float = REPORT_INTERVAL
    clock: Callable[[], float] = time.monotonic
    _window: float = field(default=-float("inf"), init=False)
    _used: int = field(default=0, init=False)
    _held: int = field(default=0, init=False)

    def take(self) -> int | None:
        """Return how many were held back since the last line if one may go now, else None."""
        now = self.clock()
        if now - self._window >= self.interval:
            self._window = now
            self._used = 0
        if self._used >= self.lines:
            self._held += 1
            return None
        self._used += 1
        held, self._held = self._held, 0
        return held


class ConnectionGuard:
    """What every connection of one server shares: the limits, the count, the budgets."""

    def __init__(self, limits: HttpLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.open = 0
        self._refused = LogBudget(clock=clock)
        self._timed_out = LogBudget(clock=clock)
        self._malformed = LogBudget(lines=MALFORMED_LINES_PER_INTERVAL, clock=clock)

    def refused(self, peer: str) -> None:
        """Report a connection closed at once because the bound was reached."""
        held = self._refused.take()
        if held is not None:
            log.warning(
                "HTTP connection from %s closed at once: %d connections open, the bound;"
                " %d more closed since the last line of this kind (at most one a minute)",
                peer,
                self.open,
                held,
            )

    def head_timed_out(self, peer: str) -> None:
        """Report a connection closed because a request head did not arrive in time."""
        held = self._timed_out.take()
        if held is not None:
            log.info(
                "HTTP connection from %s closed: no complete request head within %gs;"
                " %d more closed since the last line of this kind (at most one a minute)",
                peer,
                self.limits.head_timeout,
                held,
            )

    def malformed(self, peer: str, exc: HttpProcessingError) -> None:
        """Report a malformed request by its kind: nothing the client sent is quoted."""
        held = self._malformed.take()
        if held is not None:
            log.info(
                "malformed HTTP request from %s: %s, answered %d and closed%s",
                peer,
                error_kind(exc),
                exc.code,
                f"; {held} more not logged" if held else "",
            )


def _peer(peer: object) -> str:
    # A TCP transport's peername is (host, port[, flow, scope]); None once it is closed.
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol, with the connection bound, head timeout and quiet errors."""

    __slots__ = ("_counted", "_guard", "_head_timer")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._counted = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Serve the connection, or close it at once when the bound is reached."""
        guard = self._guard
        if guard.open >= guard.limits.max_connections:
            guard.refused(_peer(transport.get_extra_info("peername")))
            # Aborted: its descriptor is released now, not after a goodbye.
            cast("asyncio.Transport", transport).abort()
            return
        guard.open += 1
        self._counted = True
        super().connection_made(transport)
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        """Parse as aiohttp does, timing each request head from its first byte."""
        heads = self._request_count  # rises with every head parsed, malformed ones too
        super().data_received(data)
        if self._request_count > heads:
            self._stop_head_timer()
        elif self._head_timer is None and data and self._idle():
            # The first bytes of a later head on a kept-alive connection: the head
            # timeout from now, not only the keep-alive timeout from the last answer.
            self._start_head_timer()

    def _idle(self) -> bool:
        # aiohttp's request loop waits on _waiter between requests, and only then.
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _start_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._guard.limits.head_timeout, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Release the connection's place under the bound."""
        self._stop_head_timer()
        if not self._counted:
            return  # refused: aiohttp never saw it
        self._counted = False
        self._guard.open -= 1
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        self._guard.head_timed_out(_peer(self.peername))
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a malformed request in JSON and log it in one line; add the headers."""
        if isinstance(exc, HttpProcessingError):
            self._guard.malformed(_peer(self.peername), exc)
            response: web.StreamResponse = web.json_response(
                {"error": f"malformed request: {error_kind(exc)}"}, status=status
            )
            response.force_close()
        else:  # an error of the daemon's own: aiohttp logs it with its traceback
            response = super().handle_error(request, status, exc, message)
        response.headers.update(SECURITY_HEADERS)
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    def __init__(self, inner: web.Server, guard: ConnectionGuard) -> None:
        # The app's handler and request factory, and the keyword arguments aiohttp built
        # for its RequestHandler (debug, access log class, the runner's own).
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            **inner._kwargs,  # private in aiohttp 3.14; the tests of this module pin it
        )
        self.guard = guard

    def __call__(self) -> RequestHandler:
        """Make the protocol of one accepted connection."""
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections obey :class:`HttpLimits`."""

    def __init__(
        self, app: web.Application, limits: HttpLimits, *, shutdown_timeout: float = 60.0
    ) -> None:
        super().__init__(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=limits.keepalive_timeout,
            max_headers=MAX_HEADERS,
        )
        self.guard = ConnectionGuard(limits)

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.guard)
