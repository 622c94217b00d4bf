"""The HTTP layer: metrics, health, the JSON API and the status page, over a DaemonState.

Handlers stay thin: they parse the request, ask the :class:`DaemonState`, and shape the
answer. Every error answer is JSON ``{"error": "..."}`` with the status that says why,
aiohttp's own 404 and 405 included; unexpected exceptions become a 500 without a
traceback (the traceback goes to the log).

Secrets never leave through this module: target URLs lose their userinfo and query
values, headers are named but never shown, the JWT key and the API token are never read
except for the constant-time token comparison.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from spikewatch import __version__
from spikewatch.config import ScenarioConfig, SpikewatchConfig, TargetConfig
from spikewatch.config.conversation import step_names
from spikewatch.config.render import public_url
from spikewatch.core.outcomes import RunResultKind
from spikewatch.core.result import RunResult
from spikewatch.daemon.compare import stored_comparison
from spikewatch.daemon.http_guard import SECURITY_HEADERS
from spikewatch.daemon.openapi import OPENAPI_PATH, openapi_document
from spikewatch.daemon.pages import add_page_routes
from spikewatch.daemon.run_store import RunFilter
from spikewatch.daemon.state import DaemonState, RunRequestError, ScheduledPair
from spikewatch.daemon.status_page import render_status_page
from spikewatch.errors import SpikewatchError

__all__ = ["STATE", "ApiError", "create_app"]

logger = logging.getLogger(__name__)

#: The daemon the app answers for.
STATE: Final = web.AppKey("spikewatch_state", DaemonState)

#: Run requests are a few dozen bytes; anything much larger is a mistake or an attack.
_MAX_BODY_BYTES: Final = 64 * 1024
#: How many runs ``GET /api/v1/runs`` returns without ``limit``.
DEFAULT_RUNS_LIMIT: Final = 50
#: How many recent runs the status page shows.
STATUS_PAGE_RUNS: Final = 20
_RUN_FIELDS: Final = ("target", "scenario")
#: What a masked query value is shown as.
# RFC 6750 §3: the challenge a protected resource sends with its 401.
_CHALLENGE: Final = 'Bearer realm="spikewatch"'


class ApiError(SpikewatchError):
    """An error answer: its HTTP status, a message a user can act on, extra headers."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def create_app(state: DaemonState) -> web.Application:
    """Return the aiohttp application that serves every endpoint of the contract."""
    app = web.Application(middlewares=[_json_errors], client_max_size=_MAX_BODY_BYTES)
    app[STATE] = state
    # A signal, not a middleware: /metrics prepares its answer itself, before any
    # middleware could see it.
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", _status_page, name="status_page")
    app.router.add_get("/metrics", _metrics, name="metrics")
    app.router.add_get("/healthz", _healthz, name="healthz")
    app.router.add_get("/readyz", _readyz, name="readyz")
    app.router.add_get("/api/v1/targets", _targets, name="targets")
    app.router.add_get("/api/v1/runs", _list_runs, name="runs")
    app.router.add_post("/api/v1/runs", _request_run)
    app.router.add_get("/api/v1/runs/{id}", _get_run, name="run")
    app.router.add_get("/api/v1/compare", _compare, name="compare")
    app.router.add_post("/-/reload", _reload, name="reload")
    app.router.add_get(OPENAPI_PATH, _openapi, name="openapi")
    add_page_routes(app, STATE)
    return app


# --- errors ------------------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error, aiohttp's own included, into a JSON answer."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are not errors
            raise
        return _error(exc.status, _http_exception_message(request, exc), _kept_headers(exc))
    except Exception:
        # The traceback may name files and values; it belongs in the log, not the answer.
        logger.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, "internal error; the daemon's log has the details")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add the security headers to every answer, errors and /metrics included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _http_exception_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no such endpoint: {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {exc.method} is not allowed on {request.path}; use {allowed}"
    text = exc.text or ""
    # aiohttp's default body is "<status>: <reason>"; a specific text says more.
    if text and not text.startswith(f"{exc.status}:"):
        return text
    return exc.reason


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    # Allow (405) and the like must survive; the body's own headers are replaced.
    dropped = {"content-type", "content-length"}
    return {k: v for k, v in exc.headers.items() if k.lower() not in dropped}


def _authorize(request: web.Request) -> None:
    """Check the bearer token of a POST; raise :class:`ApiError` when it is not right."""
    token = request.app[STATE].api_token()
    if token is None:
        raise ApiError(403, "POST endpoints are disabled: no server.api_token_file configured")
    header = request.headers.get("Authorization")
    if header is None:
        raise ApiError(
            401,
            "missing Authorization header; send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    # RFC 9110 §11.1: the auth scheme is case-insensitive.
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError(
            401,
            "malformed Authorization header; send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_request"'},
        )
    # Constant time on bytes: compare_digest on str accepts only ASCII.
    given = credentials.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, token.encode("utf-8", "surrogatepass")):
        raise ApiError(
            401,
            "invalid bearer token",
            headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
        )


# --- health and metrics ------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    """Answer while the event loop runs."""
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Answer 200 once the config is loaded and the scheduler is up, else 503."""
    if request.app[STATE].ready:
        return web.json_response({"status": "ready"})
    return web.json_response(
        {"status": "not ready", "error": "not ready: config not loaded or scheduler not up"},
        status=503,
    )


async def _metrics(request: web.Request) -> web.StreamResponse:
    """Answer the Prometheus exposition, OpenMetrics when the Accept header asks for it."""
    parts, content_type = await request.app[STATE].render_metrics(request.headers.get("Accept"))
    # Set as a header: content_type= refuses the charset and version parameters.
    headers = {"Content-Type": content_type}
    if request.method == "HEAD":  # the headers GET would send, Content-Length included
        return web.Response(body=b"".join(parts), headers=headers)
    # Written part by part: the cached bulk of the body is sent as it is, not copied.
    response = web.StreamResponse(headers=headers)
    response.content_length = sum(len(part) for part in parts)
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


# --- targets and scenarios ---------------------------------------------------------------


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _target_doc(target: TargetConfig) -> dict[str, Any]:
    return {
        "name": target.name,
        "url": public_url(target.url),
        # Only the kind: the key, its file and the claims stay in the config.
        "auth": "jwt" if target.auth is not None else None,
        "subprotocols": list(target.subprotocols),
        # Names only: header values may be credentials.
        "headers": sorted(target.headers),
        "handshake_timeout_seconds": target.handshake_timeout,
        "close_timeout_seconds": target.close_timeout,
        "welcome_timeout_seconds": target.welcome.timeout if target.welcome else None,
        "echo_timeout_seconds": target.echo.timeout if target.echo else None,
        # Step names only: what a step sends may carry a credential.
        "conversation": step_names(target.conversation) if target.conversation else None,
        "heartbeats": len(target.heartbeats),
        "keepalive": target.keepalive is not None,
        "compression": "deflate" if target.compression and target.compression.deflate else None,
        "max_message_bytes": target.max_message_bytes,
    }


def _schedule_doc(scenario: ScenarioConfig) -> dict[str, Any]:
    schedule = scenario.schedule
    if schedule.cron is not None:
        return {"cron": schedule.cron, "timezone": schedule.timezone}
    return {"every_seconds": schedule.every, "jitter_seconds": schedule.jitter}


def _shape_doc(scenario: ScenarioConfig) -> dict[str, Any]:
    if scenario.spike is not None:
        spike = scenario.spike
        return {
            "kind": "spike",
            "connections": spike.connections,
            "batches": spike.batches,
            "batch_interval_seconds": spike.batch_interval,
        }
    if scenario.churn is not None:
        churn = scenario.churn
        return {
            "kind": "churn",
            "rate_per_second": churn.rate,
            "duration_seconds": churn.duration,
            "max_in_flight": churn.max_in_flight,
        }
    assert scenario.ramp is not None  # the config guarantees spike, ramp or churn
    return {
        "kind": "ramp",
        "steps": list(scenario.ramp.steps),
        "step_interval_seconds": scenario.ramp.step_interval,
    }


def _scenario_doc(config: SpikewatchConfig, scenario: ScenarioConfig) -> dict[str, Any]:
    stable = scenario.stable
    return {
        "name": scenario.name,
        "targets": [t.name for t in config.targets_of(scenario)],
        "schedule": _schedule_doc(scenario),
        "shape": _shape_doc(scenario),
        "hold_seconds": scenario.hold,
        "stable": (
            {"connections": stable.connections, "ping_interval_seconds": stable.ping_interval}
            if stable is not None
            else None
        ),
        "thresholds": scenario.thresholds.model_dump(exclude_none=True),
    }


def _last_doc(result: RunResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    finished = result.started_at + result.duration
    ratio = result.spike.success_ratio if result.spike is not None else None
    recovery = result.recovery
    return {
        "id": result.id,
        "result": result.result.value,
        "finished_at": _iso(finished),
        "finished_at_timestamp_seconds": round(finished, 3),
        "spike_success_ratio": None if ratio is None else round(ratio, 6),
        "recovered": recovery.recovered if recovery is not None else None,
        "recovery_seconds": recovery.seconds if recovery is not None else None,
    }


def _pair_doc(pair: ScheduledPair) -> dict[str, Any]:
    return {
        "target": pair.target,
        "scenario": pair.scenario,
        "schedule": pair.schedule,
        "state": pair.state,
        "next_run": _iso(pair.next_run),
        "next_run_timestamp_seconds": None if pair.next_run is None else round(pair.next_run, 3),
        "last": _last_doc(pair.last),
    }


async def _targets(request: web.Request) -> web.Response:
    """Answer the targets, the scenarios and each pair's schedule, without secrets."""
    state = request.app[STATE]
    config = state.config
    return web.json_response(
        {
            "targets": [_target_doc(t) for t in config.targets],
            "scenarios": [_scenario_doc(config, s) for s in config.scenarios],
            "pairs": [_pair_doc(p) for p in state.schedules()],
        }
    )


# --- runs --------------------------------------------------------------------------------


def _limit(text: str | None, capacity: int) -> int:
    if text is None or text == "":
        return min(DEFAULT_RUNS_LIMIT, capacity)
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or not digits:
        raise ApiError(400, f"limit must be a whole number from 1 to {capacity}")
    # Longer than the capacity is capped anyway; int() refuses 4300+ digits (CVE-2020-10735).
    if len(digits) > len(str(capacity)):
        return capacity
    return min(int(digits), capacity)


def _instant(name: str, text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            400, f"{name} must be an ISO 8601 date and time, like 2026-01-31T12:00:00Z"
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def _run_filter(query: Mapping[str, str]) -> RunFilter:
    result = query.get("result") or None
    if result is not None and result not in {k.value for k in RunResultKind}:
        raise ApiError(400, f"result must be one of {', '.join(k.value for k in RunResultKind)}")
    return RunFilter(
        target=query.get("target") or None,
        scenario=query.get("scenario") or None,
        result=result,
        since=_instant("since", query.get("since")),
        until=_instant("until", query.get("until")),
        version=query.get("version") or None,
    )


async def _list_runs(request: web.Request) -> web.Response:
    """Answer a page of stored runs, newest first, filtered; ``next_cursor`` continues it."""
    history = request.app[STATE].history
    query = request.query
    limit = _limit(query.get("limit"), history.capacity)
    where = _run_filter(query)
    try:
        page = await history.page(where, limit=limit, cursor=query.get("cursor") or None)
    except ValueError as exc:
        raise ApiError(400, f"cursor: {exc}") from None
    return web.json_response({"runs": page.runs, "next_cursor": page.next_cursor})


async def _get_run(request: web.Request) -> web.Response:
    """Answer one run with its detail."""
    history = request.app[STATE].history
    run_id = request.match_info["id"]
    doc = await history.find(run_id)
    if doc is None:
        kept = history.store.store.max_runs
        raise ApiError(404, f"no run {run_id!r}: the history keeps only the last {kept} runs")
    return web.json_response(doc)


async def _compare(request: web.Request) -> web.Response:
    """Answer one target version against another, from the stored runs (issue 17)."""
    query = request.query
    names = ("target", "scenario", "version", "against")
    missing = [name for name in names if not query.get(name)]
    if missing:
        raise ApiError(400, f"compare needs {', '.join(names)}; missing: {', '.join(missing)}")
    store = request.app[STATE].history.store
    comparison = await store.call(stored_comparison, store.store, *(query[n] for n in names))
    return web.json_response(comparison.as_dict())


async def _run_request(request: web.Request) -> tuple[str, str]:
    usage = 'send a JSON object {"target": "<name>", "scenario": "<name>"}'
    try:
        body = await request.read()
    except web.RequestPayloadError:
        # The body does not match its Content-Encoding or framing: the client's mistake.
        raise ApiError(400, f"request body could not be read or decoded; {usage}") from None
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # JSONDecodeError is a ValueError; arrays nested thousands deep exhaust the recursion.
        raise ApiError(400, f"request body is not valid JSON; {usage}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, f"request body must be a JSON object; {usage}")
    unknown = sorted(set(doc) - set(_RUN_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; {usage}")
    for name in _RUN_FIELDS:
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise ApiError(400, f"{name} must be a non-empty string; {usage}")
    return doc["target"], doc["scenario"]


async def _request_run(request: web.Request) -> web.Response:
    """Queue a run now and answer 202 with its id and where to follow it."""
    _authorize(request)
    target, scenario = await _run_request(request)
    try:
        entry = request.app[STATE].request_run(target, scenario)
    except RunRequestError as exc:
        raise ApiError(exc.status, str(exc)) from None
    location = str(request.app.router["run"].url_for(id=entry.id))
    return web.json_response(
        {
            "id": entry.id,
            "target": entry.target,
            "scenario": entry.scenario,
            "state": entry.state,
            "links": {"self": location},
        },
        status=202,
        headers={"Location": location},
    )


async def _reload(request: web.Request) -> web.Response:
    """Reload the config file; keep the config in force when the new one is rejected."""
    _authorize(request)
    problems = await request.app[STATE].reload()
    if problems:
        return web.json_response(
            {
                "error": "config rejected, the previous config stays in force",
                "problems": [str(p) for p in problems],
            },
            status=400,
        )
    return web.json_response({"status": "reloaded"})


async def _openapi(request: web.Request) -> web.Response:
    """Answer the OpenAPI document of this API (shapes only, no config values)."""
    return web.json_response(openapi_document())


# --- status page -------------------------------------------------------------------------


async def _status_page(request: web.Request) -> web.Response:
    """Answer the human-readable status page."""
    state = request.app[STATE]
    config = state.config
    page = render_status_page(
        version=__version__,
        ready=state.ready,
        pairs=state.schedules(),
        runs=state.history.recent(limit=STATUS_PAGE_RUNS),
        target_urls={t.name: public_url(t.url) for t in config.targets},
        now=time.time(),
    )
    return web.Response(
        text=page,
        content_type="text/html",
        headers={
            # No script runs on this page; say so, so an escaping bug cannot become one.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )
