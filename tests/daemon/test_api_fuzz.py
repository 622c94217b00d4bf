"""The HTTP API fuzzed by schemathesis from the document it serves: no 5xx, no hang, no lie.

The real aiohttp app runs on 127.0.0.1, port 0, over a FakeDaemonState, in a thread
with its own event loop: schemathesis sends its requests synchronously (``requests``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from spikewatch.daemon.api import create_app
from spikewatch.daemon.openapi import OPENAPI_PATH, openapi_document
from tests.conftest import scaled
from tests.daemon.fakes import API_TOKEN, FakeDaemonState, finished_result, finished_run

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Examples per operation and mode: the whole file stays well under 30 s.
MAX_EXAMPLES = 40
#: A request that takes longer than this is a hang, and fails the test.
REQUEST_TIMEOUT = scaled(5.0)


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether a request can break the operation: a body, a typed parameter, a token."""
    typed = [p for p in operation.get("parameters", []) if p["schema"] != {"type": "string"}]
    return bool(typed) or "requestBody" in operation or "security" in operation


#: (mode, method, path) of every operation; schemathesis leaves out the document's own
#: path (test_api.py checks that one); negative mode only where a request can break.
CASES = [
    pytest.param(mode, method.upper(), path, id=f"{mode}-{method.upper()} {path}")
    for mode in ("positive", "negative")
    for path, item in openapi_document()["paths"].items()
    for method, operation in item.items()
    if path != OPENAPI_PATH and (mode == "positive" or _negatable(operation))
]
OPERATIONS = {(method, path) for _, method, path in (case.values for case in CASES)}


@dataclass(frozen=True)
class ServedApp:
    """The app served in a background thread: its base URL and the fake behind it."""

    base_url: str
    state: FakeDaemonState


async def _serve(
    app: web.Application, started: threading.Event, stop: asyncio.Event, port: list[int]
) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(runner.addresses[0][1])
        started.set()
        await stop.wait()
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    """Serve the app over a fake with a token and one finished run, in its own thread."""
    state = FakeDaemonState()
    state.history.add(finished_run(finished_result(run_id="run-done")))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    port: list[int] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(_serve(create_app(state), started, stop, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread below
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, name="api-fuzz-server", daemon=True)
    thread.start()
    try:
        assert started.wait(scaled(10.0)), "the server did not start"
        assert not failure, failure
        yield ServedApp(f"http://127.0.0.1:{port[0]}", state)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(scaled(10.0))
        assert not thread.is_alive(), "the server thread did not stop"
        loop.close()
        assert not failure, failure


@pytest.fixture(scope="module")
def api_schema(served: ServedApp) -> schemathesis.BaseSchema:
    """Load the document the app serves, as a client would."""
    return schemathesis.openapi.from_url(served.base_url + OPENAPI_PATH, timeout=REQUEST_TIMEOUT)


def test_served_document_lists_every_fuzzed_operation(api_schema: schemathesis.BaseSchema) -> None:
    """The served document loads in schemathesis with every operation of the built one."""
    loaded = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert loaded == OPERATIONS


@pytest.mark.parametrize(("mode", "method", "path"), CASES)
def test_fuzzed_operation_answers_within_its_contract(
    api_schema: schemathesis.BaseSchema, served: ServedApp, method: str, path: str, mode: str
) -> None:
    """Generated requests never get a 5xx, never hang, and get a documented answer."""
    operation = api_schema[path][method]
    generation_mode = schemathesis.GenerationMode(mode)
    # With the right token half the time, so the fuzzer gets past the auth check.
    auth = st.sampled_from([{}, {"Authorization": f"Bearer {API_TOKEN}"}])

    @given(case=operation.as_strategy(generation_mode=generation_mode), headers=auth)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=REQUEST_TIMEOUT * 1000,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def answers_within_contract(case: schemathesis.Case, headers: dict[str, str]) -> None:
        case.call_and_validate(
            base_url=served.base_url,
            session=session,
            headers=headers,
            checks=CHECKS,
            timeout=REQUEST_TIMEOUT,
        )

    with requests.Session() as session:
        answers_within_contract()
