"""The HTTP layer against the real aiohttp server in-process, over a FakeDaemonState."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from spikewatch import __version__
from spikewatch.config import TargetConfig
from spikewatch.config.render import public_url
from spikewatch.core.outcomes import RunResultKind
from spikewatch.daemon.api import _target_doc, create_app
from spikewatch.daemon.history import RunEntry
from spikewatch.daemon.openapi import OPENAPI_PATH, openapi_document
from spikewatch.daemon.state import AlreadyQueuedError, QueueFullError
from spikewatch.daemon.status_page import render_status_page
from spikewatch.errors import ConfigProblem
from tests.daemon.conftest import Client
from tests.daemon.fakes import (
    API_TOKEN,
    HEADER_SECRET,
    JWT_SECRET,
    NOW,
    QUERY_TOKEN,
    SECRETS,
    FakeDaemonState,
    finished_result,
    finished_run,
    status_page,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
RUN = {"target": "chat-staging", "scenario": "avalanche"}


async def json_of(response: Any, status: int) -> Any:
    """Assert the status and JSON content type of an answer, and return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def add_finished(state: FakeDaemonState, **kwargs: Any) -> RunEntry:
    """Add a finished run to the fake's history and return its entry."""
    entry = finished_run(finished_result(**kwargs))
    state.history.add(entry)
    return entry


# --- health and metrics ------------------------------------------------------------------


async def test_healthz_answers_ok(client: Client) -> None:
    """GET /healthz answers 200 {"status": "ok"}."""
    assert await json_of(await client.get("/healthz"), 200) == {"status": "ok"}


async def test_readyz_answers_200_when_ready(client: Client) -> None:
    """GET /readyz answers 200 while the daemon is ready."""
    assert await json_of(await client.get("/readyz"), 200) == {"status": "ready"}


async def test_readyz_answers_503_with_a_reason_when_not_ready(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /readyz answers 503 JSON with an error message while the daemon is not ready."""
    state.ready = False
    body = await json_of(await client.get("/readyz"), 503)
    assert body["status"] == "not ready"
    assert "config" in body["error"]


async def test_metrics_answers_classic_text_by_default(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /metrics without OpenMetrics in Accept answers the classic text format."""
    response = await client.get("/metrics", headers={"Accept": "text/plain"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "spikewatch_build_info" in await response.text()
    assert state.metrics_accepts == ["text/plain"]


async def test_metrics_answers_openmetrics_when_asked(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /metrics with an OpenMetrics Accept answers OpenMetrics, passing Accept through."""
    accept = "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
    response = await client.get("/metrics", headers={"Accept": accept})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")
    assert state.metrics_accepts == [accept]


async def test_metrics_without_accept_passes_none(client: Client, state: FakeDaemonState) -> None:
    """GET /metrics with no Accept header hands None to the daemon."""
    response = await client.get("/metrics", skip_auto_headers=["Accept"])
    assert response.status == 200
    assert state.metrics_accepts == [None]


async def test_metrics_body_is_its_parts_in_order_with_their_length(
    client: Client, state: FakeDaemonState
) -> None:
    """The parts the daemon renders are written in order, under one exact Content-Length."""
    response = await client.get("/metrics", headers={"Accept": "text/plain"})
    body = await response.read()
    parts, _ = await state.render_metrics("text/plain")
    assert len(parts) == 2
    assert body == b"".join(parts)
    assert response.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in response.headers


async def test_metrics_answers_head_without_a_body(client: Client) -> None:
    """HEAD /metrics answers 200 with GET's content type and length, and no body."""
    response = await client.head("/metrics", headers={"Accept": "text/plain"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert await response.read() == b""
    get = await client.get("/metrics", headers={"Accept": "text/plain"})
    assert response.headers["Content-Length"] == str(len(await get.read()))


# --- targets -----------------------------------------------------------------------------


async def test_targets_lists_targets_without_secrets(client: Client) -> None:
    """GET /api/v1/targets shows each target's name, safe url, auth kind and timeouts."""
    body = await json_of(await client.get("/api/v1/targets"), 200)
    chat, local = body["targets"]
    assert chat == {
        "name": "chat-staging",
        "url": "wss://staging.example.com/ws/test?room=***&token=***",
        "auth": "jwt",
        "subprotocols": ["chat.v1"],
        "headers": ["X-Api-Key", "X-Client"],
        "handshake_timeout_seconds": 5.0,
        "close_timeout_seconds": 1.0,
        "welcome_timeout_seconds": 2.0,
        "echo_timeout_seconds": 1.0,
        "conversation": None,
        "heartbeats": 0,
        "keepalive": False,
        "compression": None,
        "max_message_bytes": 1048576,
    }
    assert local["url"] == "ws://127.0.0.1:8765/ws"
    assert local["auth"] is None
    assert local["welcome_timeout_seconds"] is None


async def test_targets_lists_scenarios_with_schedule_and_shape(client: Client) -> None:
    """GET /api/v1/targets shows each scenario's targets, schedule and spike or ramp."""
    body = await json_of(await client.get("/api/v1/targets"), 200)
    avalanche, ramp = body["scenarios"]
    assert avalanche == {
        "name": "avalanche",
        "targets": ["chat-staging", "echo-local"],
        "schedule": {"every_seconds": 900.0, "jitter_seconds": 30.0},
        "shape": {"kind": "spike", "connections": 25, "batches": 3, "batch_interval_seconds": 1.0},
        "hold_seconds": 0.0,
        "stable": {"connections": 2, "ping_interval_seconds": 1.0},
        "thresholds": {"success_ratio": 0.99, "recovery": 60.0},
    }
    assert ramp["targets"] == ["echo-local"]
    assert ramp["schedule"] == {"cron": "*/30 * * * *", "timezone": "Europe/Paris"}
    assert ramp["shape"] == {"kind": "ramp", "steps": [5, 10, 15], "step_interval_seconds": 10.0}
    assert ramp["stable"] is None


async def test_targets_lists_each_pair_with_next_run_state_and_last_result(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /api/v1/targets gives each pair its next run (ISO and epoch), state, last result."""
    state.next_runs[("chat-staging", "avalanche")] = NOW + 60.25
    add_finished(state, run_id="r1", started_at=NOW - 100.0, duration=10.0)
    state.history.add(RunEntry("r2", "echo-local", "ramp", "api", NOW))
    body = await json_of(await client.get("/api/v1/targets"), 200)
    pairs = {(p["target"], p["scenario"]): p for p in body["pairs"]}
    assert set(pairs) == {
        ("chat-staging", "avalanche"),
        ("echo-local", "avalanche"),
        ("echo-local", "ramp"),
    }
    chat = pairs["chat-staging", "avalanche"]
    assert chat["next_run"] == "2026-11-24T10:01:00.250Z"
    assert chat["next_run_timestamp_seconds"] == NOW + 60.25
    assert chat["state"] == "idle"
    assert chat["schedule"] == "every 900s ± 30s"
    assert chat["last"] == {
        "id": "r1",
        "result": "passed",
        "finished_at": "2026-11-24T09:58:30.000Z",
        "finished_at_timestamp_seconds": NOW - 90.0,
        "spike_success_ratio": 0.96,
        "recovered": True,
        "recovery_seconds": 1.5,
    }
    ramp = pairs["echo-local", "ramp"]
    assert ramp["state"] == "queued"
    assert ramp["next_run"] is None
    assert ramp["next_run_timestamp_seconds"] is None
    assert ramp["last"] is None


def test_public_url_drops_userinfo_and_masks_query_values() -> None:
    """public_url drops user:password@, masks query values and drops the fragment."""
    assert public_url("wss://u:p@h.example:8443/ws?a=1&b=&c=x%20y#f") == (
        "wss://h.example:8443/ws?a=***&b=***&c=***"
    )
    assert public_url("ws://[::1]:9000/ws") == "ws://[::1]:9000/ws"


# --- runs --------------------------------------------------------------------------------


async def test_runs_lists_newest_first_without_detail(
    client: Client, state: FakeDaemonState
) -> None:
    """GET /api/v1/runs lists runs newest first, in their short form."""
    add_finished(state, run_id="old")
    add_finished(state, run_id="new", target="echo-local")
    body = await json_of(await client.get("/api/v1/runs"), 200)
    assert [r["id"] for r in body["runs"]] == ["new", "old"]
    assert "detail" not in body["runs"][0]
    assert body["runs"][0]["state"] == "done"


async def test_runs_filters_by_target_and_scenario(client: Client, state: FakeDaemonState) -> None:
    """GET /api/v1/runs?target=&scenario= keeps only the matching runs."""
    add_finished(state, run_id="a", target="chat-staging", scenario="avalanche")
    add_finished(state, run_id="b", target="echo-local", scenario="avalanche")
    add_finished(state, run_id="c", target="echo-local", scenario="ramp")
    by_target = await json_of(await client.get("/api/v1/runs?target=echo-local"), 200)
    assert [r["id"] for r in by_target["runs"]] == ["c", "b"]
    by_both = await json_of(
        await client.get("/api/v1/runs", params={"target": "echo-local", "scenario": "avalanche"}),
        200,
    )
    assert [r["id"] for r in by_both["runs"]] == ["b"]
    empty_filter = await json_of(await client.get("/api/v1/runs?target=&scenario="), 200)
    assert len(empty_filter["runs"]) == 3
    unknown = await json_of(await client.get("/api/v1/runs?target=nope"), 200)
    assert unknown == {"runs": [], "next_cursor": None}


async def test_runs_limit_defaults_to_50_and_caps_at_capacity(state: FakeDaemonState) -> None:
    """GET /api/v1/runs returns 50 by default and at most the history's capacity."""
    for i in range(80):
        add_finished(state, run_id=f"r{i}")
    async with TestClient(TestServer(create_app(state), host="127.0.0.1", port=0)) as client:
        default = await json_of(await client.get("/api/v1/runs"), 200)
        assert len(default["runs"]) == 50
        assert default["runs"][0]["id"] == "r79"
        three = await json_of(await client.get("/api/v1/runs?limit=3"), 200)
        assert [r["id"] for r in three["runs"]] == ["r79", "r78", "r77"]
        many = await json_of(await client.get("/api/v1/runs?limit=100000"), 200)
        assert len(many["runs"]) == 80

    small = FakeDaemonState(capacity=5)
    for i in range(8):
        add_finished(small, run_id=f"s{i}")
    async with TestClient(TestServer(create_app(small), host="127.0.0.1", port=0)) as client:
        capped = await json_of(await client.get("/api/v1/runs?limit=1000"), 200)
        assert len(capped["runs"]) == 5


async def test_runs_limit_with_thousands_of_digits_is_capped(client: Client) -> None:
    """A limit longer than int() accepts (4300 digits) is capped, not a 500."""
    # Found probing for 5xx: int() raised ValueError past sys.get_int_max_str_digits().
    assert await json_of(await client.get("/api/v1/runs", params={"limit": "9" * 5000}), 200)
    padded = "0" * 5000 + "2"
    assert await json_of(await client.get("/api/v1/runs", params={"limit": padded}), 200)


@pytest.mark.parametrize("limit", ["abc", "0", "00", "-1", "1.5", " 3", "+3", "٣"])
async def test_runs_rejects_a_bad_limit(client: Client, limit: str) -> None:
    """GET /api/v1/runs with a limit that is not a whole number ≥ 1 answers 400."""
    body = await json_of(await client.get("/api/v1/runs", params={"limit": limit}), 400)
    assert "limit must be a whole number from 1 to 200" in body["error"]


async def test_runs_pages_follow_next_cursor(client: Client, state: FakeDaemonState) -> None:
    """GET /api/v1/runs pages with limit; next_cursor continues, null on the last page."""
    for i in range(5):
        add_finished(state, run_id=f"r{i}")
    first = await json_of(await client.get("/api/v1/runs?limit=2"), 200)
    assert [r["id"] for r in first["runs"]] == ["r4", "r3"]
    second = await json_of(
        await client.get("/api/v1/runs", params={"limit": "2", "cursor": first["next_cursor"]}),
        200,
    )
    assert [r["id"] for r in second["runs"]] == ["r2", "r1"]
    last = await json_of(
        await client.get("/api/v1/runs", params={"limit": "2", "cursor": second["next_cursor"]}),
        200,
    )
    assert last == {"runs": [last["runs"][0]], "next_cursor": None}
    assert last["runs"][0]["id"] == "r0"


async def test_runs_filter_by_result_and_time(client: Client, state: FakeDaemonState) -> None:
    """GET /api/v1/runs?result=&since=&until= keeps runs of that result accepted in the range."""
    add_finished(state, run_id="early", started_at=NOW - 3600)
    add_finished(state, run_id="failed", result=RunResultKind.FAILED, started_at=NOW - 60)
    add_finished(state, run_id="late", started_at=NOW - 30)
    failed = await json_of(await client.get("/api/v1/runs?result=failed"), 200)
    assert [r["id"] for r in failed["runs"]] == ["failed"]
    since = datetime.fromtimestamp(NOW - 600, UTC).isoformat()
    until = datetime.fromtimestamp(NOW - 30, UTC).replace(tzinfo=None).isoformat()
    window = await json_of(
        await client.get("/api/v1/runs", params={"since": since, "until": until}), 200
    )
    assert [r["id"] for r in window["runs"]] == ["failed"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"result": "great"}, "result must be one of passed, failed"),
        ({"since": "yesterday"}, "since must be an ISO 8601 date and time"),
        ({"until": "2026-13-01"}, "until must be an ISO 8601 date and time"),
        ({"cursor": "not-ours"}, "cursor: not a cursor from this API"),
    ],
)
async def test_runs_rejects_a_bad_filter_or_cursor(
    client: Client, query: dict[str, str], message: str
) -> None:
    """GET /api/v1/runs with an unknown result, a bad instant or a foreign cursor answers 400."""
    body = await json_of(await client.get("/api/v1/runs", params=query), 400)
    assert message in body["error"]


async def test_run_detail_includes_detail(client: Client, state: FakeDaemonState) -> None:
    """GET /api/v1/runs/{id} answers the run with its detail."""
    add_finished(state, run_id="r1")
    body = await json_of(await client.get("/api/v1/runs/r1"), 200)
    assert body["id"] == "r1"
    assert body["result"] == "passed"
    assert body["detail"]["upgrade_statuses"] == {"503": 1}
    assert body["trigger"] == "schedule"


async def test_run_detail_of_an_unknown_run_is_a_json_404(client: Client) -> None:
    """GET /api/v1/runs/{id} of a run not in the history answers 404 JSON."""
    body = await json_of(await client.get("/api/v1/runs/nope"), 404)
    assert body["error"] == "no run 'nope': the history keeps only the last 200 runs"


# --- POST /api/v1/runs -------------------------------------------------------------------


async def test_post_run_queues_and_answers_202_with_location(
    client: Client, state: FakeDaemonState
) -> None:
    """POST /api/v1/runs with the right token queues a run: 202, its id, Location."""
    response = await client.post("/api/v1/runs", json=RUN, headers=AUTH)
    body = await json_of(response, 202)
    assert body == {
        "id": "run-1",
        "target": "chat-staging",
        "scenario": "avalanche",
        "state": "queued",
        "links": {"self": "/api/v1/runs/run-1"},
    }
    assert response.headers["Location"] == "/api/v1/runs/run-1"
    assert state.run_requests == [("chat-staging", "avalanche")]
    followed = await json_of(await client.get(response.headers["Location"]), 200)
    assert followed["state"] == "queued"
    assert followed["result"] is None


async def test_post_run_accepts_a_lowercase_scheme(client: Client) -> None:
    """The Bearer scheme is matched without regard to case (RFC 9110 §11.1)."""
    headers = {"Authorization": f"bearer  {API_TOKEN} "}
    await json_of(await client.post("/api/v1/runs", json=RUN, headers=headers), 202)


async def test_post_run_without_authorization_is_401(
    client: Client, state: FakeDaemonState
) -> None:
    """POST /api/v1/runs without a token answers 401 with a Bearer challenge."""
    response = await client.post("/api/v1/runs", json=RUN)
    body = await json_of(response, 401)
    assert "Authorization" in body["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert state.run_requests == []


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", API_TOKEN, "Token " + API_TOKEN]
)
async def test_post_run_with_a_malformed_authorization_is_401(
    client: Client, state: FakeDaemonState, header: str
) -> None:
    """POST /api/v1/runs with an Authorization that is not `Bearer <token>` answers 401."""
    response = await client.post("/api/v1/runs", json=RUN, headers={"Authorization": header})
    body = await json_of(response, 401)
    assert body["error"].startswith("malformed Authorization header")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert API_TOKEN not in await response.text()
    assert state.run_requests == []


@pytest.mark.parametrize(
    "token", ["wrong", API_TOKEN + "x", API_TOKEN[:-1], API_TOKEN.upper(), "tökén"]
)
async def test_post_run_with_a_wrong_token_is_401(
    client: Client, state: FakeDaemonState, token: str
) -> None:
    """POST /api/v1/runs with a wrong token answers 401, echoing neither token."""
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.post("/api/v1/runs", json=RUN, headers=headers)
    body = await json_of(response, 401)
    assert body == {"error": "invalid bearer token"}
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert state.run_requests == []


async def test_post_run_without_a_configured_token_is_403(
    client: Client, state: FakeDaemonState
) -> None:
    """POST /api/v1/runs answers 403 when no API token is configured, whatever is sent."""
    state.token = None
    response = await client.post("/api/v1/runs", json=RUN, headers=AUTH)
    body = await json_of(response, 403)
    assert body == {"error": "POST endpoints are disabled: no server.api_token_file configured"}
    assert state.run_requests == []


async def test_auth_is_checked_before_the_body_is_read(client: Client) -> None:
    """An unauthenticated POST with a bad body is refused for its auth, not its body."""
    response = await client.post("/api/v1/runs", data=b"{not json")
    await json_of(response, 401)


async def test_post_run_for_an_unknown_pair_is_404(client: Client) -> None:
    """POST /api/v1/runs for a pair that does not exist answers 404 with the daemon's message."""
    body = {"target": "echo-local", "scenario": "nope"}
    answer = await json_of(await client.post("/api/v1/runs", json=body, headers=AUTH), 404)
    assert answer == {"error": "no scenario 'nope' for target 'echo-local'"}


async def test_post_run_twice_is_409(client: Client) -> None:
    """A second POST /api/v1/runs for a pair already queued answers 409."""
    await json_of(await client.post("/api/v1/runs", json=RUN, headers=AUTH), 202)
    body = await json_of(await client.post("/api/v1/runs", json=RUN, headers=AUTH), 409)
    assert "already queued" in body["error"]


async def test_post_run_maps_run_errors_to_their_status(
    client: Client, state: FakeDaemonState
) -> None:
    """Each RunRequestError becomes its own status and message: 409, 429."""
    state.run_error = AlreadyQueuedError("avalanche on chat-staging is running")
    body = await json_of(await client.post("/api/v1/runs", json=RUN, headers=AUTH), 409)
    assert body == {"error": "avalanche on chat-staging is running"}
    state.run_error = QueueFullError("the run queue is full (4 runs); try again later")
    body = await json_of(await client.post("/api/v1/runs", json=RUN, headers=AUTH), 429)
    assert body == {"error": "the run queue is full (4 runs); try again later"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b"\xff\xfe{}", "request body is not valid JSON"),
        (b"[]", "request body must be a JSON object"),
        (b'"chat-staging"', "request body must be a JSON object"),
        (b'{"target": "chat-staging"}', "scenario must be a non-empty string"),
        (b'{"scenario": "avalanche"}', "target must be a non-empty string"),
        (b'{"target": 1, "scenario": "avalanche"}', "target must be a non-empty string"),
        (b'{"target": "", "scenario": "avalanche"}', "target must be a non-empty string"),
        (b'{"target": "a", "scenario": "b", "when": "now"}', "unknown field(s) 'when'"),
        # Found probing for 5xx: nesting deeper than the recursion limit was a 500.
        (b"[" * 30_000, "request body is not valid JSON"),
    ],
)
async def test_post_run_with_a_bad_body_is_400(
    client: Client, state: FakeDaemonState, data: bytes, message: str
) -> None:
    """POST /api/v1/runs with a body that is not {"target": str, "scenario": str} answers 400."""
    headers = {**AUTH, "Content-Type": "application/json"}
    body = await json_of(await client.post("/api/v1/runs", data=data, headers=headers), 400)
    assert body["error"].startswith(message)
    assert '{"target": "<name>", "scenario": "<name>"}' in body["error"]
    assert state.run_requests == []


async def test_post_run_with_a_body_that_does_not_match_its_encoding_is_400(
    client: Client, state: FakeDaemonState
) -> None:
    """A body that is not what its Content-Encoding says answers 400 JSON, not 500."""
    # Found probing for 5xx: aiohttp's RequestPayloadError escaped the handler as a 500.
    headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post("/api/v1/runs", data=b'{"target": "x"}', headers=headers)
    body = await json_of(response, 400)
    assert body["error"].startswith("request body could not be read or decoded")
    assert state.run_requests == []


async def test_post_run_with_a_huge_body_is_a_json_413(client: Client) -> None:
    """A request body past the size limit answers 413 JSON, with aiohttp's own message."""
    response = await client.post("/api/v1/runs", data=b"x" * 100_000, headers=AUTH)
    body = await json_of(response, 413)
    assert "Maximum request body size" in body["error"]


# --- POST /-/reload ----------------------------------------------------------------------


async def test_reload_answers_reloaded(client: Client, state: FakeDaemonState) -> None:
    """POST /-/reload answers 200 when the new config was applied."""
    assert await json_of(await client.post("/-/reload", headers=AUTH), 200) == {
        "status": "reloaded"
    }
    assert state.reloads == 1


async def test_reload_rejected_lists_the_problems(client: Client, state: FakeDaemonState) -> None:
    """POST /-/reload answers 400 with every problem when the new config is rejected."""
    state.reload_problems = [
        ConfigProblem("scenarios[0].spike.batches", "must be ≥ 1"),
        ConfigProblem("", "must be a mapping of sections, not a list"),
    ]
    body = await json_of(await client.post("/-/reload", headers=AUTH), 400)
    assert body == {
        "error": "config rejected, the previous config stays in force",
        "problems": [
            "scenarios[0].spike.batches: must be ≥ 1",
            "must be a mapping of sections, not a list",
        ],
    }


async def test_reload_needs_the_token(client: Client, state: FakeDaemonState) -> None:
    """POST /-/reload answers 401 without the token and 403 without a configured one."""
    await json_of(await client.post("/-/reload"), 401)
    await json_of(await client.post("/-/reload", headers={"Authorization": "Bearer no"}), 401)
    state.token = None
    await json_of(await client.post("/-/reload", headers=AUTH), 403)
    assert state.reloads == 0


# --- errors ------------------------------------------------------------------------------


async def test_unknown_route_is_a_json_404(client: Client) -> None:
    """A path no endpoint serves answers 404 JSON."""
    body = await json_of(await client.get("/api/v2/nothing"), 404)
    assert body == {"error": "no such endpoint: /api/v2/nothing"}


async def test_wrong_method_is_a_json_405_with_allow(client: Client) -> None:
    """GET on a POST-only route answers 405 JSON, keeping the Allow header."""
    response = await client.get("/-/reload")
    body = await json_of(response, 405)
    assert body == {"error": "method GET is not allowed on /-/reload; use POST"}
    assert response.headers["Allow"] == "POST"
    response = await client.delete("/api/v1/runs")
    body = await json_of(response, 405)
    assert "use GET, HEAD, POST" in body["error"]


async def test_unexpected_exception_is_a_json_500_without_details(
    state: FakeDaemonState, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in a handler answers 500 JSON without its message; the log has it."""

    def broken() -> list[Any]:
        raise RuntimeError("internal detail /etc/secret")

    state.schedules = broken  # type: ignore[method-assign]
    async with TestClient(TestServer(create_app(state), host="127.0.0.1", port=0)) as client:
        with caplog.at_level(logging.ERROR, logger="spikewatch.daemon.api"):
            response = await client.get("/api/v1/targets")
            text = await response.text()
    assert response.status == 500
    assert response.content_type == "application/json"
    assert "internal detail" not in text
    assert "Traceback" not in text
    assert any("internal detail" in r.getMessage() or r.exc_info for r in caplog.records)


async def test_other_http_exceptions_become_json(state: FakeDaemonState) -> None:
    """aiohttp's other HTTP errors become JSON with their reason; redirects pass through."""

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    app = create_app(state)
    app.router.add_get("/gone", gone)
    app.router.add_get("/moved", moved)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        assert await json_of(await client.get("/gone"), 410) == {"error": "Gone"}
        response = await client.get("/moved", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"] == "/"


# --- secrets -----------------------------------------------------------------------------


async def test_no_get_answer_contains_a_secret(client: Client, state: FakeDaemonState) -> None:
    """No GET answer, error or not, contains the JWT secret, API token or credentials."""
    add_finished(state, run_id="r1")
    await json_of(await client.post("/api/v1/runs", json=RUN, headers=AUTH), 202)
    paths = [
        "/",
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/targets",
        "/api/v1/runs",
        "/api/v1/runs/r1",
        "/api/v1/runs/run-1",
        "/api/v1/runs/nope",
        "/api/v1/runs?limit=x",
        "/nothing",
        "/-/reload",
        OPENAPI_PATH,
    ]
    for path in paths:
        response = await client.get(path)
        answer = await response.text() + str(dict(response.headers))
        for secret in SECRETS:
            assert secret not in answer, f"{path} leaks {secret}"
    assert {JWT_SECRET, API_TOKEN, QUERY_TOKEN, HEADER_SECRET} <= set(SECRETS)


# --- the OpenAPI document ----------------------------------------------------------------


def test_every_route_is_documented_and_every_documented_operation_is_routed() -> None:
    """The OpenAPI document lists exactly the method/path pairs create_app routes."""
    app = create_app(FakeDaemonState())
    routed = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None  # aiohttp adds HEAD to GETs
    }
    documented = {
        (method, path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert routed == documented


async def test_openapi_document_is_served_without_secrets(client: Client) -> None:
    """GET /api/v1/openapi.json answers the OpenAPI 3.0.3 document, and no secret in it."""
    response = await client.get(OPENAPI_PATH)
    assert await json_of(response, 200) == openapi_document()
    text = await response.text()
    for secret in SECRETS:
        assert secret not in text


def _json_schema(node: Any) -> Any:
    """Turn OpenAPI 3.0 schema dialect (``nullable``) into JSON Schema, recursively."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


async def assert_documented(response: Any, method: str, path: str) -> None:
    """Assert an answer's status, content type and body are the ones documented for it."""
    document = openapi_document()
    documented = document["paths"][path][method.lower()]["responses"]
    status = str(response.status)
    assert status in documented, f"{method} {path} answered undocumented {status}"
    content = documented[status]["content"]
    assert response.content_type in content, f"{response.content_type} not in {list(content)}"
    if response.content_type != "application/json":
        return
    schema = {
        **_json_schema(content[response.content_type]["schema"]),
        "components": _json_schema(document["components"]),
    }
    jsonschema.Draft202012Validator(schema).validate(await response.json())


def _not_ready(state: FakeDaemonState) -> None:
    state.ready = False


def _no_token(state: FakeDaemonState) -> None:
    state.token = None


def _queue_full(state: FakeDaemonState) -> None:
    state.run_error = QueueFullError("the run queue is full (4 runs)")


def _reload_rejected(state: FakeDaemonState) -> None:
    state.reload_problems = [ConfigProblem("targets[0].url", "not a ws:// or wss:// URL")]


Setup = Callable[[FakeDaemonState], None] | None


@dataclasses.dataclass(frozen=True)
class Answer:
    """A request, what to set on the fake first, and the documented answer it gets."""

    status: int
    method: str
    path: str  # as documented: the template
    url: str
    kwargs: dict[str, Any]
    setup: Setup

    def __str__(self) -> str:
        return f"{self.status} {self.method} {self.url}"


#: One real answer of each documented status.
ANSWERS = [
    Answer(200, "GET", "/", "/", {}, None),
    Answer(200, "GET", "/metrics", "/metrics", {}, None),
    Answer(
        200,
        "GET",
        "/metrics",
        "/metrics",
        {"headers": {"Accept": "application/openmetrics-text"}},
        None,
    ),
    Answer(200, "GET", "/healthz", "/healthz", {}, None),
    Answer(200, "GET", "/readyz", "/readyz", {}, None),
    Answer(503, "GET", "/readyz", "/readyz", {}, _not_ready),
    Answer(200, "GET", "/api/v1/targets", "/api/v1/targets", {}, None),
    Answer(200, "GET", "/api/v1/runs", "/api/v1/runs", {}, None),
    Answer(
        200, "GET", "/api/v1/runs", "/api/v1/runs?target=echo-local&scenario=ramp&limit=2", {}, None
    ),
    Answer(400, "GET", "/api/v1/runs", "/api/v1/runs?limit=0", {}, None),
    Answer(200, "GET", "/api/v1/runs/{id}", "/api/v1/runs/r1", {}, None),
    Answer(200, "GET", "/api/v1/runs/{id}", "/api/v1/runs/run-1", {}, None),
    Answer(404, "GET", "/api/v1/runs/{id}", "/api/v1/runs/nope", {}, None),
    Answer(202, "POST", "/api/v1/runs", "/api/v1/runs", {"json": RUN, "headers": AUTH}, None),
    Answer(400, "POST", "/api/v1/runs", "/api/v1/runs", {"json": [], "headers": AUTH}, None),
    Answer(401, "POST", "/api/v1/runs", "/api/v1/runs", {"json": RUN}, None),
    Answer(403, "POST", "/api/v1/runs", "/api/v1/runs", {"json": RUN, "headers": AUTH}, _no_token),
    Answer(
        404,
        "POST",
        "/api/v1/runs",
        "/api/v1/runs",
        {"json": {"target": "echo-local", "scenario": "avalanche-x"}, "headers": AUTH},
        None,
    ),
    Answer(
        429, "POST", "/api/v1/runs", "/api/v1/runs", {"json": RUN, "headers": AUTH}, _queue_full
    ),
    Answer(
        413, "POST", "/api/v1/runs", "/api/v1/runs", {"data": b"x" * 100_000, "headers": AUTH}, None
    ),
    Answer(200, "POST", "/-/reload", "/-/reload", {"headers": AUTH}, None),
    Answer(400, "POST", "/-/reload", "/-/reload", {"headers": AUTH}, _reload_rejected),
    Answer(401, "POST", "/-/reload", "/-/reload", {}, None),
    Answer(403, "POST", "/-/reload", "/-/reload", {"headers": AUTH}, _no_token),
    Answer(200, "GET", OPENAPI_PATH, OPENAPI_PATH, {}, None),
    Answer(200, "GET", "/runs/{id}", "/runs/r1", {}, None),
    Answer(404, "GET", "/runs/{id}", "/runs/nope", {}, None),
    Answer(200, "GET", "/targets/{target}/{scenario}", "/targets/echo-local/ramp", {}, None),
    Answer(404, "GET", "/targets/{target}/{scenario}", "/targets/nope/ramp", {}, None),
    Answer(
        200,
        "GET",
        "/api/v1/compare",
        "/api/v1/compare?target=chat-staging&scenario=avalanche&version=2.0&against=1.0",
        {},
        None,
    ),
    Answer(400, "GET", "/api/v1/compare", "/api/v1/compare?target=chat-staging", {}, None),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=str)
async def test_real_answers_match_the_documented_responses(
    client: Client, state: FakeDaemonState, answer: Answer
) -> None:
    """Each real answer's status, content type and body are the documented ones."""
    add_finished(state, run_id="r1")
    state.history.add(
        RunEntry(
            id="run-1",
            target="echo-local",
            scenario="ramp",
            trigger="api",
            queued_at=NOW,
            state="running",
            started_at=NOW,
        )
    )
    state.next_runs[("chat-staging", "avalanche")] = NOW + 60
    if answer.setup is not None:
        answer.setup(state)
    response = await client.request(answer.method, answer.url, **answer.kwargs)
    assert response.status == answer.status, await response.text()
    await assert_documented(response, answer.method, answer.path)


def test_every_documented_answer_is_checked_against_a_real_one() -> None:
    """Each documented status of each operation has a real answer checked above."""
    documented = {
        (method.upper(), path, int(status))
        for path, item in openapi_document()["paths"].items()
        for method, operation in item.items()
        for status in operation["responses"]
    }
    checked = {(a.method, a.path, a.status) for a in ANSWERS} | {("POST", "/api/v1/runs", 409)}
    assert documented == checked


async def test_post_run_conflict_matches_the_documented_409(client: Client) -> None:
    """A second run request for a queued pair answers the documented 409."""
    await assert_documented(
        await client.post("/api/v1/runs", json=RUN, headers=AUTH), "POST", "/api/v1/runs"
    )
    response = await client.post("/api/v1/runs", json=RUN, headers=AUTH)
    assert response.status == 409
    await assert_documented(response, "POST", "/api/v1/runs")


# --- status page -------------------------------------------------------------------------


async def test_status_page_shows_pairs_results_and_links(
    client: Client, state: FakeDaemonState
) -> None:
    """GET / renders HTML with the version, each pair's last result and links to runs."""
    add_finished(state, run_id="r-pass", scenario="avalanche")
    add_finished(
        state,
        run_id="r-fail",
        target="echo-local",
        scenario="ramp",
        result=RunResultKind.FAILED,
        recovery_seconds=None,
        message="missed: recovered",
    )
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = await response.text()
    assert '<meta http-equiv="refresh" content="10">' in page
    assert f"version {__version__}" in page
    assert '<span class="badge ready">ready</span>' in page
    assert '<span class="badge passed">passed</span>' in page
    assert '<span class="badge failed">failed</span>' in page
    assert '<a href="/runs/r-pass">r-pass</a>' in page
    assert "96.0%" in page
    assert "1.50 s" in page
    assert "not within 120 s" in page
    assert "wss://staging.example.com/ws/test?room=***&amp;token=***" in page
    assert 'href="/metrics"' in page
    assert 'href="/api/v1/targets"' in page


async def test_status_page_escapes_values(client: Client, state: FakeDaemonState) -> None:
    """Every value on the page is HTML-escaped."""
    add_finished(state, message='<script>alert("x")</script>')
    page = await (await client.get("/")).text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


async def test_status_page_when_not_ready_and_empty(client: Client, state: FakeDaemonState) -> None:
    """GET / says when the daemon is not ready and when there are no runs yet."""
    state.ready = False
    page = await (await client.get("/")).text()
    assert "not ready" in page
    assert "no runs yet" in page
    assert "no run yet" in page
    assert "not scheduled" in page


def test_status_page_renders_times_states_and_running_runs() -> None:
    """The page shows relative and absolute times, queued and running states."""
    state = FakeDaemonState()
    state.next_runs[("chat-staging", "avalanche")] = NOW + 250.0
    state.next_runs[("echo-local", "avalanche")] = NOW + 3 * 3600 + 120
    state.next_runs[("echo-local", "ramp")] = NOW + 2 * 86400 + 3600
    add_finished(state, run_id="d", started_at=NOW - 3600 - 10, duration=10.0)
    running = RunEntry("run-x", "echo-local", "ramp", "api", NOW - 5, "running", NOW - 0.5)
    state.history.add(running)
    queued = RunEntry("run-q", "echo-local", "avalanche", "api", NOW)
    state.history.add(queued)
    page = status_page(state)
    assert "in 4m 10s" in page
    assert "in 3h 2m" in page
    assert "in 2d 1h" in page
    assert "1h 0m ago" in page
    assert '<time datetime="2026-11-24T10:04:10Z">2026-11-24 10:04:10 UTC</time>' in page
    assert '<span class="badge running">running</span>' in page
    assert '<span class="badge queued">queued</span>' in page
    assert "not started" in page  # the queued run
    assert "now<br>" in page  # the running run started 0.5 s ago


def test_status_page_with_no_pairs() -> None:
    """The page says so when there is no pair to show."""
    page = render_status_page(version="1", ready=True, pairs=[], runs=[], target_urls={}, now=NOW)
    assert "no pairs configured" in page


def test_status_page_shows_target_down_without_spike_figures() -> None:
    """A target_down run shows its colour and dashes for spike ratio and recovery."""
    state = FakeDaemonState()
    result = finished_result(result=RunResultKind.TARGET_DOWN, run_id="down", started_at=NOW - 30)
    state.history.add(finished_run(dataclasses.replace(result, spike=None, recovery=None)))
    page = status_page(state, version="1")
    assert '<span class="badge target_down">target_down</span>' in page
    assert '<td class="num">—</td>' in page
    assert "17s ago" in page


def test_target_document_names_conversation_steps_not_their_payloads() -> None:
    """A conversation target's document lists step names, heartbeats, keepalive, compression."""
    target = TargetConfig.model_validate(
        {
            "name": "sio",
            "url": "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket",
            "conversation": [
                {"name": "open", "expect": {"match": "^0"}},
                {"send": {"text": '40{"token":"s3cr3t-token"}'}},
            ],
            "heartbeats": [{"when": {"match": "^2$"}, "answer": {"text": "3"}}],
            "keepalive": {"send": {"text": "42[1]"}, "expect": {"match": "^43"}},
            "compression": {"deflate": True},
        }
    )
    doc = _target_doc(target)
    assert (doc["conversation"], doc["heartbeats"], doc["keepalive"], doc["compression"]) == (
        ["open", "step2"],
        1,
        True,
        "deflate",
    )
    assert "s3cr3t" not in repr(doc)
