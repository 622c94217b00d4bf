"""Run the daemon as a real process and talk to it over HTTP."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.conftest import scaled

_LISTENING = re.compile(r"listening on (http://[^\s\"]+)")


class DaemonProcess:
    """``spikewatch run`` in a subprocess; its stderr is read line by line as events."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None
        self.base = ""
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._new_line = asyncio.Event()

    async def start(self) -> DaemonProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spikewatch",
            "run",
            "--config",
            str(self.config),
            *self.extra,
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


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path
