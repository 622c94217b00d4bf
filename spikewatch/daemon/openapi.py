"""The OpenAPI 3.0.3 document of the HTTP API, served at ``GET /api/v1/openapi.json``.

Built in code from constants only: it describes shapes, never values, so no secret of
the config can reach it. ``tests/daemon/test_api.py`` keeps it true to ``create_app``
(every route documented, every documented path routed, real answers valid against it)
and ``tests/daemon/test_api_fuzz.py`` fuzzes the API from it.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from spikewatch import __version__
from spikewatch.core.outcomes import RunResultKind

__all__ = ["OPENAPI_PATH", "openapi_document"]

#: Where the document is served.
OPENAPI_PATH: Final = "/api/v1/openapi.json"

_JSON: Final = "application/json"
_RUN_STATES: Final = ["queued", "running", "done", "cancelled"]
_PAIR_STATES: Final = ["idle", "queued", "running"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("Error"))


def _object(required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


_STRING: Final[dict[str, Any]] = {"type": "string"}
_NUMBER: Final[dict[str, Any]] = {"type": "number"}
_INTEGER: Final[dict[str, Any]] = {"type": "integer"}
_COUNTS: Final[dict[str, Any]] = {"type": "object", "additionalProperties": _INTEGER}

_SCHEMAS: Final[dict[str, Any]] = {
    "Error": _object(["error"], error=_STRING),
    "Status": _object(["status"], status=_STRING),
    "RunRequest": {
        **_object(["target", "scenario"], target=_STRING, scenario=_STRING),
        "additionalProperties": False,
    },
    "RunAccepted": _object(
        ["id", "target", "scenario", "state", "links"],
        id=_STRING,
        target=_STRING,
        scenario=_STRING,
        state={"type": "string", "enum": _RUN_STATES},
        links=_object(["self"], self=_STRING),
    ),
    # Loose on purpose: the run result's phases grow fields; these are the ones to rely on.
    "Run": _object(
        ["id", "target", "scenario", "state"],
        id=_STRING,
        target=_STRING,
        scenario=_STRING,
        target_version=_nullable(_STRING),
        state={"type": "string", "enum": _RUN_STATES},
        trigger={"type": "string", "enum": ["schedule", "api"]},
        result=_nullable({"type": "string", "enum": [k.value for k in RunResultKind]}),
        message=_STRING,
        started_at={"type": "string", "format": "date-time"},
        duration_seconds=_NUMBER,
        baseline=_nullable({"type": "object"}),
        spike=_nullable({"type": "object"}),
        stable=_nullable({"type": "object"}),
        recovery=_nullable({"type": "object"}),
        thresholds={"type": "array", "items": {"type": "object"}},
        prober=_nullable({"type": "object"}),
        errors={"type": "array", "items": {"type": "object"}},
        detail={
            "type": "object",
            "description": "Only from GET /api/v1/runs/{id}: upgrade_statuses, timeline_seconds"
            " (the phases' marks) and timeline (each probe's start and latency or outcome,"
            " batch starts, T0, the recovery instant, stable drops and keepalive round trips,"
            " the spike's handshake histogram and a capped sample; bounded in size)",
        },
        reason=_STRING,
    ),
    "RunList": _object(
        ["runs", "next_cursor"],
        runs={"type": "array", "items": _ref("Run")},
        next_cursor=_nullable(_STRING),
    ),
    "Targets": _object(
        ["targets", "scenarios", "pairs"],
        targets={
            "type": "array",
            "items": _object(
                ["name", "url", "auth", "headers"],
                name=_STRING,
                url=_STRING,
                auth=_nullable({"type": "string", "enum": ["jwt"]}),
                headers={"type": "array", "items": _STRING},
                subprotocols={"type": "array", "items": _STRING},
                conversation=_nullable({"type": "array", "items": _STRING}),
                heartbeats={"type": "integer", "minimum": 0},
                keepalive={"type": "boolean"},
                compression=_nullable({"type": "string", "enum": ["deflate"]}),
            ),
        },
        scenarios={
            "type": "array",
            "items": _object(
                ["name", "targets", "schedule", "shape"],
                name=_STRING,
                targets={"type": "array", "items": _STRING},
                schedule={"type": "object"},
                shape={"type": "object"},
            ),
        },
        pairs={
            "type": "array",
            "items": _object(
                ["target", "scenario", "schedule", "state", "next_run", "last"],
                target=_STRING,
                scenario=_STRING,
                schedule=_STRING,
                state={"type": "string", "enum": _PAIR_STATES},
                next_run=_nullable(_STRING),
                next_run_timestamp_seconds=_nullable(_NUMBER),
                last=_nullable({"type": "object"}),
            ),
        },
    ),
    "Comparison": _object(
        ["target", "scenario", "version", "against", "alpha", "method", "figures"],
        target=_STRING,
        scenario=_STRING,
        version=_STRING,
        against=_STRING,
        alpha=_NUMBER,
        method=_STRING,
        figures={
            "type": "object",
            "additionalProperties": _object(
                ["version", "against", "p_value", "verdict"],
                version={"type": "object"},
                against={"type": "object"},
                p_value=_nullable(_NUMBER),
                verdict={
                    "type": "string",
                    "enum": ["different", "not_different", "too_few_runs"],
                },
            ),
        },
    ),
    "ReloadRejected": _object(
        ["error", "problems"], error=_STRING, problems={"type": "array", "items": _STRING}
    ),
}

_SECURED: Final[dict[str, Any]] = {
    "security": [{"bearer": []}],
}
_AUTH_ERRORS: Final[dict[str, Any]] = {
    "401": _error("Missing, malformed or wrong bearer token"),
    "403": _error("POST endpoints are disabled: no API token configured"),
}


def _filter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": _STRING,
    }


_PATHS: Final[dict[str, Any]] = {
    "/": {
        "get": {
            "summary": "The human-readable status page",
            "responses": {
                "200": {"description": "HTML page", "content": {"text/html": {"schema": _STRING}}}
            },
        }
    },
    "/runs/{id}": {
        "get": {
            "summary": "One run's page: verdict, probe latency chart, thresholds, errors",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": _STRING}],
            "responses": {
                "200": {"description": "HTML page", "content": {"text/html": {"schema": _STRING}}},
                "404": {
                    "description": "No such run in the history",
                    "content": {"text/html": {"schema": _STRING}},
                },
            },
        }
    },
    "/targets/{target}/{scenario}": {
        "get": {
            "summary": "A target-scenario pair's page: the recovery times of its recent runs",
            "parameters": [
                {"name": "target", "in": "path", "required": True, "schema": _STRING},
                {"name": "scenario", "in": "path", "required": True, "schema": _STRING},
            ],
            "responses": {
                "200": {"description": "HTML page", "content": {"text/html": {"schema": _STRING}}},
                "404": {
                    "description": "No such pair configured and no run of it stored",
                    "content": {"text/html": {"schema": _STRING}},
                },
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus exposition; OpenMetrics when the Accept header asks for it",
            "responses": {
                "200": {
                    "description": "The exposition",
                    "content": {
                        "text/plain": {"schema": _STRING},
                        "application/openmetrics-text": {"schema": _STRING},
                    },
                }
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Answers while the event loop runs",
            "responses": {"200": _json("Alive", _ref("Status"))},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Config loaded and scheduler up",
            "responses": {
                "200": _json("Ready", _ref("Status")),
                "503": _json(
                    "Not ready", _object(["status", "error"], status=_STRING, error=_STRING)
                ),
            },
        }
    },
    "/api/v1/targets": {
        "get": {
            "summary": "Targets, scenarios and each pair's schedule, without secrets",
            "responses": {"200": _json("Targets", _ref("Targets"))},
        }
    },
    "/api/v1/runs": {
        "get": {
            "summary": "Stored runs, newest first, a page at a time",
            "parameters": [
                _filter("target", "Only runs of this target"),
                _filter("scenario", "Only runs of this scenario"),
                _filter("version", "Only runs that measured this target version"),
                {
                    "name": "result",
                    "in": "query",
                    "required": False,
                    "description": "Only runs with this result",
                    "schema": {"type": "string", "enum": [k.value for k in RunResultKind]},
                },
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "Only runs accepted at or after this instant (UTC if no offset)",
                    "schema": {"type": "string", "format": "date-time"},
                },
                {
                    "name": "until",
                    "in": "query",
                    "required": False,
                    "description": "Only runs accepted before this instant (UTC if no offset)",
                    "schema": {"type": "string", "format": "date-time"},
                },
                _filter("cursor", "The next_cursor of the previous page: the runs after it"),
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "At most this many runs (capped at the history's capacity)",
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "responses": {
                "200": _json("Runs", _ref("RunList")),
                "400": _error("Invalid limit, result, since, until or cursor"),
            },
        },
        "post": {
            "summary": "Run a target's scenario now",
            **_SECURED,
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("RunRequest")}}},
            "responses": {
                "202": _json("Queued; Location names the run", _ref("RunAccepted")),
                "400": _error("The body is not a run request"),
                **_AUTH_ERRORS,
                "404": _error("No such target/scenario pair"),
                "409": _error("The pair is already queued or running"),
                "413": _error("The body is too large"),
                "429": _error("The run queue is full"),
            },
        },
    },
    "/api/v1/runs/{id}": {
        "get": {
            "summary": "One run with its detail",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": _STRING},
            ],
            "responses": {
                "200": _json("The run", _ref("Run")),
                "404": _error("No such run in the history"),
            },
        }
    },
    "/api/v1/compare": {
        "get": {
            "summary": "One target version against another from the stored runs "
            "(Mann-Whitney U per figure: recovery, spike success ratio, handshake p95)",
            "parameters": [
                {**_filter("target", "The target"), "required": True},
                {**_filter("scenario", "The scenario"), "required": True},
                {**_filter("version", "The version to judge"), "required": True},
                {**_filter("against", "The version to judge it by"), "required": True},
            ],
            "responses": {
                "200": _json("The comparison", _ref("Comparison")),
                "400": _error("A parameter is missing"),
            },
        }
    },
    "/-/reload": {
        "post": {
            "summary": "Reload the config file",
            **_SECURED,
            "responses": {
                "200": _json("Reloaded", _ref("Status")),
                "400": _json(
                    "Config rejected; the previous one stays in force", _ref("ReloadRejected")
                ),
                **_AUTH_ERRORS,
            },
        }
    },
    OPENAPI_PATH: {
        "get": {
            "summary": "This document",
            "responses": {"200": _json("OpenAPI 3.0.3 document", {"type": "object"})},
        }
    },
}


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.0.3 document of every endpoint ``create_app`` serves."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "spikewatch",
            "version": __version__,
            "description": "The spikewatch daemon's HTTP API. Errors are JSON "
            '{"error": "..."} with the status that says why.',
        },
        "paths": copy.deepcopy(_PATHS),
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
