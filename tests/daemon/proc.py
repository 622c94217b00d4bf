"""Run the daemon as a real process and talk to it over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import scaled

_LISTENING = re.compile(r"listening on (http://[^\s\",]+)")


class DaemonProcess:
    """``spikewatch run`` in a subprocess; its stderr is read line by line as events."""

    def __init__(self, config: Path, *extra: str, stdout: Path | None = None) -> None:
        self.config = config
        self.extra = extra
        #: Where the daemon's stdout goes (a file, for a test to read), else inherited.
        self.stdout = stdout
        self.proc: asyncio.subprocess.Process | None = None
        self.base = ""
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> DaemonProcess:
        with contextlib.ExitStack() as stack:
            out = None if self.stdout is None else stack.enter_context(self.stdout.open("wb"))
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "spikewatch",
                "run",
                "--config",
                str(self.config),
                *self.extra,
                stdout=out,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._reader = asyncio.create_task(self._read())
        line = await self.wait_for_line(lambda text: _LISTENING.search(text) is not None, 20)
        match = _LISTENING.search(line)
        assert match is not None
        self.base = match.group(1)
        return self

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
            self._new_line = asyncio.Event()

    async def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Wait until a stderr line matching ``predicate`` appears; return it."""
        seen = 0
        async with asyncio.timeout(scaled(timeout)):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self._reader is not None and self._reader.done():
                    raise AssertionError("daemon exited:\n" + "\n".join(self.lines))
                await self._new_line.wait()

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), scaled(timeout))
        if self._reader is not None:
            await self._reader
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def request(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, headers=headers, **kwargs) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.read()

    async def run_now(self, target: str, scenario: str, token: str) -> str:
        """Ask for a run of ``target``/``scenario`` through the API; return its id."""
        status, _, raw = await self.request(
            "POST", "/api/v1/runs", json={"target": target, "scenario": scenario}, token=token
        )
        assert status == 202, raw
        run_id: str = json.loads(raw)["id"]
        return run_id

    async def run_result(self, run_id: str, timeout: float) -> dict[str, Any]:
        """Wait for the run's "run finished" log line, then return its JSON with detail.

        A run that crashed instead (the dispatcher's "run <id> of ... crashed") fails at once.
        """
        crashed = f"run {run_id} of "
        line = await self.wait_for_line(
            lambda line: (
                ("run finished" in line and f"run_id={run_id}" in line)
                or (crashed in line and "crashed" in line)
            ),
            timeout,
        )
        assert "crashed" not in line, "\n".join(self.lines)
        status, _, raw = await self.request("GET", f"/api/v1/runs/{run_id}")
        assert status == 200, raw
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def metric_values(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Scrape /metrics; return every sample as (name, labels) → value."""
        status, _, body = await self.request("GET", "/metrics")
        assert status == 200, body
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }


def metric_sum(
    values: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in values.items() if n == name and wanted <= got)
