"""The reference target: an aiohttp WebSocket server that welcomes, echoes and degrades.

Routes (on one listener):

- ``GET <path>`` (``/ws``): the WebSocket. On connect it sends
  ``{"type":"welcome","conn":<n>}``, then echoes every text and binary message.
- ``GET /healthz``: 200 while the event loop answers.
- ``GET /stats``: the counters of :class:`~spikewatch.target.degrade.TargetStats`.
- ``POST /degrade``: a JSON object of knob overrides, applied at once.
- ``POST /reset``: the start-up knobs again, and any degradation in progress ends.
- ``GET /version``: ``{"version": ...}``, the ``version`` knob (also sent in the 101
  answer's ``X-App-Version`` header when set).

Every decision (burst, recovery, capacity) is made by the pure
:class:`~spikewatch.target.degrade.TargetState`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

from aiohttp import WSCloseCode, WSMsgType, hdrs, web

from spikewatch.target.behaviour import (
    VERSION_HEADER,
    InvalidKnobError,
    TargetBehaviour,
    with_knobs,
)
from spikewatch.target.degrade import Clock, TargetState, TargetStats
from spikewatch.target.tokens import (
    QUERY_PARAMETER,
    find_token,
    offered_subprotocols,
    select_subprotocol,
    token_is_valid,
)

#: Seconds to wait for a peer's close frame after the target closes (RFC 6455 §7.1.1).
CLOSE_TIMEOUT = 1.0

#: Seconds aiohttp gives request handlers to finish when the target closes.
SHUTDOWN_TIMEOUT = 1.0

#: Pending connections the listen queue holds, so that an avalanche is not refused by it.
BACKLOG = 4096

#: Close code for connections dropped by a burst (RFC 6455 §7.4.1, IANA registry).
SERVICE_RESTART = 1012


class _ReferenceTarget:
    """The per-server state and handlers behind one aiohttp application."""

    def __init__(
        self,
        behaviour: TargetBehaviour,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.initial = behaviour
        self.state = TargetState(behaviour, clock=clock, wall_clock=wall_clock)
        self.closing = asyncio.Event()
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._closers: set[asyncio.Task[bool]] = set()
        # Set and replaced whenever a connection arrives, opens, is refused or closes,
        # but only while someone waits: a benchmark's thousands of upgrades pay nothing.
        self._changed = asyncio.Event()
        self._watchers = 0

    def changed(self) -> None:
        """Wake every :meth:`RunningTarget.wait_for_stats` caller."""
        if self._watchers:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for_stats(self, predicate: Callable[[TargetStats], bool]) -> TargetStats:
        self._watchers += 1
        try:
            while True:
                changed = self._changed
                stats = self.state.stats()
                if predicate(stats):
                    return stats
                await changed.wait()
        finally:
            self._watchers -= 1

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz, allow_head=False)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/degrade", self.degrade)
        app.router.add_post("/reset", self.reset)
        app.router.add_get("/version", self.version, allow_head=False)
        app.router.add_get(self.initial.path, self.websocket, allow_head=False)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """Answer one upgrade request: delay, check the token and capacity, then echo."""
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return _error(400, "expected a WebSocket upgrade (RFC 6455 §4.1)")
        arrival = self.state.upgrade_requested()
        self.changed()
        if arrival.drop:
            self._close_sockets(arrival.drop, SERVICE_RESTART, b"burst")
        if arrival.delay > 0 and await self._closing_within(arrival.delay):
            return _error(503, "target closing")
        behaviour = self.state.behaviour
        offered = offered_subprotocols(request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()))
        token = find_token(
            request.headers.get(hdrs.AUTHORIZATION), request.query.get(QUERY_PARAMETER), offered
        )
        if behaviour.jwt_key is not None and (
            token is None or not token_is_valid(token, behaviour)
        ):
            self.state.auth_rejected()
            self.changed()
            reason = "missing token" if token is None else "invalid token"
            return _error(401, reason, {hdrs.WWW_AUTHENTICATE: 'Bearer realm="spikewatch"'})
        if not self.state.reserve():
            self.changed()
            retry = str(self.state.retry_after())
            return _error(503, "over capacity", {hdrs.RETRY_AFTER: retry})
        protocol = select_subprotocol(offered, behaviour.subprotocols, token)
        ws = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            compress=False,
            heartbeat=None,
            timeout=CLOSE_TIMEOUT,
        )
        if behaviour.version is not None:
            ws.headers[VERSION_HEADER] = behaviour.version
        if protocol is None and offered:
            # aiohttp logs the offered list when it selects none, and a token offered
            # there is a credential that must never reach a log.
            headers = request.headers.copy()
            headers.popall(hdrs.SEC_WEBSOCKET_PROTOCOL)
            request = request.clone(headers=headers)
        try:
            await ws.prepare(request)
        except ConnectionResetError:
            # The client left while the upgrade was delayed: nobody is there to answer.
            self.state.release()
            return _error(400, "client left before the upgrade")
        except BaseException:
            self.state.release()
            raise
        conn = self.state.opened()
        self._sockets[conn] = ws
        self.changed()
        try:
            await self._serve(ws, conn, welcome=behaviour.welcome)
        finally:
            del self._sockets[conn]
            self.state.closed(conn)
            self.changed()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, conn: int, *, welcome: bool) -> None:
        if self.closing.is_set():
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"target closing")
            return
        # A peer that vanished mid-echo ends the connection; it is not an error of ours.
        with contextlib.suppress(ConnectionResetError):
            if welcome:
                await ws.send_str(f'{{"type":"welcome","conn":{conn}}}')
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await ws.send_str(message.data)
                elif message.type is WSMsgType.BINARY:
                    await ws.send_bytes(message.data)

    async def _closing_within(self, delay: float) -> bool:
        """Wait ``delay`` seconds; return True early if the target starts closing."""
        try:
            await asyncio.wait_for(self.closing.wait(), delay)
        except TimeoutError:
            return False
        return True

    def _close_sockets(self, conns: Iterable[int], code: int, message: bytes) -> None:
        for conn in conns:
            # The state and _sockets change together, so every named connection is here.
            task = asyncio.create_task(self._sockets[conn].close(code=code, message=message))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats().as_dict())

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.state.behaviour.version})

    async def degrade(self, request: web.Request) -> web.Response:
        try:
            overrides = await request.json()
        except json.JSONDecodeError as exc:
            return _error(400, f"body is not JSON: {exc}")
        if not isinstance(overrides, dict):
            return _error(400, "body must be a JSON object of knob overrides")
        try:
            self.set_behaviour(with_knobs(self.state.behaviour, overrides))
        except InvalidKnobError as exc:
            return web.json_response({"error": str(exc), "knob": exc.knob}, status=400)
        return web.json_response({"behaviour": self.state.behaviour.public_knobs()})

    async def reset(self, request: web.Request) -> web.Response:
        self.restore()
        return web.json_response({"behaviour": self.state.behaviour.public_knobs()})

    def set_behaviour(self, behaviour: TargetBehaviour) -> None:
        self.state.behaviour = behaviour

    def restore(self) -> None:
        self.state.behaviour = self.initial
        self.state.end_degradation()

    async def on_shutdown(self, app: web.Application) -> None:
        """Close every WebSocket (1001, going away) so that shutdown does not wait on them."""
        self.closing.set()
        self._close_sockets(list(self._sockets), WSCloseCode.GOING_AWAY, b"target closing")
        if self._closers:
            await asyncio.gather(*self._closers, return_exceptions=True)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class RunningTarget:
    """A started reference target: its address, live knobs, counters, and ``close()``."""

    def __init__(
        self, target: _ReferenceTarget, runner: web.AppRunner, host: str, port: int, tls: bool
    ) -> None:
        self._target = target
        self._runner = runner
        self.host = host
        self.port = port
        self._tls = tls
        self._closed = False

    @property
    def url(self) -> str:
        """Return the WebSocket URL, ``ws://`` or ``wss://`` with the path."""
        scheme = "wss" if self._tls else "ws"
        return f"{scheme}://{_url_host(self.host)}:{self.port}{self._target.initial.path}"

    @property
    def http_url(self) -> str:
        """Return the base URL of the control endpoints, without a trailing slash."""
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{_url_host(self.host)}:{self.port}"

    @property
    def behaviour(self) -> TargetBehaviour:
        """Return the knobs in force now."""
        return self._target.state.behaviour

    def stats(self) -> TargetStats:
        """Return the same counters as ``GET /stats``."""
        return self._target.state.stats()

    async def wait_for_stats(self, predicate: Callable[[TargetStats], bool]) -> TargetStats:
        """Wait until ``predicate(stats)`` holds and return those stats.

        It re-checks whenever a connection arrives, opens, is refused or closes. Time
        passing alone does not wake it: to see ``degraded`` turn false, sleep past
        ``degraded_until_epoch`` instead. Bound the wait with ``asyncio.timeout``.
        """
        return await self._target.wait_for_stats(predicate)

    async def set_behaviour(self, **knobs: object) -> TargetBehaviour:
        """Replace some knobs now, as ``POST /degrade`` does; raise InvalidKnobError if bad."""
        self._target.set_behaviour(with_knobs(self._target.state.behaviour, knobs))
        return self.behaviour

    async def reset(self) -> TargetBehaviour:
        """Restore the start-up knobs and end any degradation, as ``POST /reset`` does."""
        self._target.restore()
        return self.behaviour

    async def close(self) -> None:
        """Close every WebSocket and the listener; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_reference_target(
    behaviour: TargetBehaviour,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    *,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
) -> RunningTarget:
    """Start the reference target on ``host:port`` (0: any free port) and return it.

    ``clock`` (monotonic) and ``wall_clock`` (epoch) are what its burst and recovery
    rules read; tests hand in a clock they move.
    """
    target = _ReferenceTarget(behaviour, clock, wall_clock)
    runner = web.AppRunner(target.build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return RunningTarget(target, runner, host, site.port, tls=ssl_context is not None)
