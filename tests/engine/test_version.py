"""A run reads its target's version: from the 101 answers, or one bounded GET; never fails."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spikewatch.config import SpikewatchConfig
from spikewatch.config.version import VersionConfig
from spikewatch.core.outcomes import RunResultKind
from spikewatch.core.redact import Redactor
from spikewatch.core.version import UNKNOWN, TargetVersion
from spikewatch.engine import runner
from spikewatch.engine.runner import RunReport, execute_run
from spikewatch.engine.version import MAX_VERSION_BODY_BYTES, read_version_url
from spikewatch.target.behaviour import TargetBehaviour
from spikewatch.target.server import RunningTarget, start_reference_target
from tests.builders import WELCOME, RunConfigs, make_prober

write_config = RunConfigs(
    target={"welcome": {"match": WELCOME}},
    scenario={
        "baseline": {"probes": 3, "interval": "20ms"},
        "spike": {"connections": 5},
        "recovery": {"probe_interval": "50ms", "consecutive": 2, "timeout": "3s", "slack": "50ms"},
    },
)


async def run(config: SpikewatchConfig) -> RunReport:
    prober = make_prober()
    report = await execute_run(config.targets[0], config.scenarios[0], prober)
    assert prober.registry.open == 0
    return report


class VersionServer:
    """A plain HTTP server on loopback answering version URLs in the ways a service may."""

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        answers = {
            "/json": web.json_response({"build": {"version": "7.1"}}),
            "/text": web.Response(text="service v3.2.1 up"),
            "/missing": web.Response(status=404),
            "/huge": web.Response(body=b" " * (MAX_VERSION_BODY_BYTES + 1)),
        }

        async def answer(request: web.Request) -> web.Response:
            return answers[request.path]

        app = web.Application()
        for path in answers:
            app.router.add_get(path, answer)
        app.router.add_get("/silent", self.silent)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def silent(self, request: web.Request) -> web.Response:
        await self.never.wait()  # answers only when the client gives up
        return web.Response()


@pytest.fixture
async def server() -> AsyncIterator[VersionServer]:
    running = VersionServer()
    await running.start()
    yield running
    running.never.set()
    assert running.runner is not None
    await running.runner.cleanup()


async def test_the_upgrade_answer_header_names_the_version(tmp_path: Path) -> None:
    """X-App-Version in the 101 answers of the baseline probes is the run's target_version."""
    async with await start_reference_target(TargetBehaviour(version="1.4.2")) as target:
        config = write_config(tmp_path, target.url, {}, version={"header": "x-app-version"})
        result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    doc = result.as_dict()
    assert doc["target_version"] == "1.4.2"
    assert "target_version_reason" not in doc["detail"]


async def test_a_target_without_the_header_is_unknown_and_still_passes(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """No header: unknown with the reason in the detail; the run is judged as always."""
    config = write_config(tmp_path, reference.url, {}, version={"header": "X-App-Version"})
    result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    doc = result.as_dict()
    assert doc["target_version"] == UNKNOWN
    assert doc["detail"]["target_version_reason"] == (
        "header X-App-Version: no probe's answer carried it"
    )


async def test_a_target_down_still_reports_the_version_its_answers_carried(tmp_path: Path) -> None:
    """Upgrades that succeed but never welcome: target_down, and the version is known."""
    behaviour = TargetBehaviour(version="9.0", welcome=False)
    async with await start_reference_target(behaviour) as target:
        config = write_config(
            tmp_path,
            target.url,
            {},
            welcome={"match": WELCOME, "timeout": "100ms"},
            version={"header": "X-App-Version"},
        )
        result = (await run(config)).result
    assert result.result == RunResultKind.TARGET_DOWN
    assert result.target_version == "9.0"


async def test_the_version_url_of_the_reference_target(tmp_path: Path) -> None:
    """GET /version of the reference target, its JSON field read."""
    async with await start_reference_target(TargetBehaviour(version="2.5.0")) as target:
        version = {"url": f"{target.http_url}/version", "json": "version"}
        config = write_config(tmp_path, target.url, {}, version=version)
        result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    assert result.target_version == "2.5.0"
    assert result.target_version_reason is None


async def test_a_version_url_that_does_not_answer_in_time_is_unknown(
    tmp_path: Path, reference: RunningTarget, server: VersionServer
) -> None:
    """A silent version URL is cut at its timeout; the run passes with an unknown version."""
    version = {"url": f"{server.base}/silent?token=s3cret", "json": "v", "timeout": "200ms"}
    config = write_config(tmp_path, reference.url, {}, version=version)
    result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    assert result.target_version == UNKNOWN
    assert result.target_version_reason == "url /silent: no answer within 0.2s"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ({"url": "/json", "json": "build.version"}, ("7.1", None)),
        ({"url": "/text", "regex": r"v(?P<version>[0-9.]+)"}, ("3.2.1", None)),
        ({"url": "/missing", "json": "v"}, (UNKNOWN, "url /missing: answered 404")),
        (
            {"url": "/huge", "json": "v"},
            (UNKNOWN, f"url /huge: answer larger than {MAX_VERSION_BODY_BYTES} bytes"),
        ),
        ({"url": "/text", "json": "v"}, (UNKNOWN, "url /text: the answer is not JSON")),
    ],
)
async def test_version_urls(
    server: VersionServer, version: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    """Each answer of a version URL gives a version or unknown with the reason."""
    config = VersionConfig.model_validate({**version, "url": server.base + version["url"]})
    read = await read_version_url(config)
    assert (read.value, read.reason) == expected


async def test_a_refused_version_url_is_unknown() -> None:
    """Nothing listening: unknown, naming the error type only (the URL may hold a token)."""
    with_socket = web.AppRunner(web.Application())
    await with_socket.setup()
    site = web.TCPSite(with_socket, "127.0.0.1", 0)
    await site.start()
    port = with_socket.addresses[0][1]
    await with_socket.cleanup()  # the port is free again: nothing listens there
    config = VersionConfig.model_validate({"url": f"http://127.0.0.1:{port}/v", "json": "v"})
    read = await read_version_url(config)
    assert read.value == UNKNOWN
    assert read.reason == "url /v: ClientConnectorError"


async def test_a_run_cut_short_before_the_version_url_answered(
    tmp_path: Path, reference: RunningTarget, server: VersionServer
) -> None:
    """The run's deadline comes first: the run is an error, its version unknown and why."""
    version = {"url": f"{server.base}/silent", "json": "v", "timeout": "30s"}
    config = write_config(tmp_path, reference.url, {"timeout": "1s"}, version=version)
    result = (await run(config)).result
    assert result.result == RunResultKind.ERROR
    assert result.target_version == UNKNOWN
    assert result.target_version_reason == "url /silent: the run ended before it answered"


async def test_a_version_read_that_breaks_is_unknown_with_its_type(
    tmp_path: Path, reference: RunningTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the reading (never expected) still gives unknown, not a failed run."""

    async def broken(config: VersionConfig) -> TargetVersion:
        raise RuntimeError(config.source)

    monkeypatch.setattr(runner, "read_version_url", broken)
    config = write_config(tmp_path, reference.url, {}, version={"url": "http://h/v", "json": "v"})
    result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    assert (result.target_version, result.target_version_reason) == (
        UNKNOWN,
        "url /v: RuntimeError",
    )


async def test_a_version_holding_a_secret_is_not_recorded(tmp_path: Path) -> None:
    """A target that reports a configured secret as its version: masked to unknown."""
    secret = "s3cret-token-value"
    async with await start_reference_target(TargetBehaviour(version=secret)) as target:
        config = write_config(
            tmp_path,
            target.url,
            {},
            headers={"X-Api-Key": secret},
            version={"header": "X-App-Version"},
        )
        prober = dataclasses.replace(make_prober(), redact=Redactor([secret]))
        result = (await execute_run(config.targets[0], config.scenarios[0], prober)).result
    assert result.target_version == UNKNOWN
    assert result.target_version_reason == "the version read holds a secret; not recorded"


async def test_a_conversation_capture_names_the_version(
    tmp_path: Path, reference: RunningTarget
) -> None:
    """version: {capture: version}: what the baseline probes' conversations captured."""
    conversation = [
        {"name": "welcome", "expect": {"match": WELCOME}},
        {"name": "ask", "send": {"text": '{"app":"5.5.1"}'}},
        {"name": "answer", "expect": {"match": '"app":"(?P<version>[0-9.]+)"'}},
    ]
    config = write_config(
        tmp_path,
        reference.url,
        {},
        welcome=None,
        conversation=conversation,
        version={"capture": "version"},
    )
    result = (await run(config)).result
    assert result.result == RunResultKind.PASSED
    assert (result.target_version, result.target_version_reason) == ("5.5.1", None)
