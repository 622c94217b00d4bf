"""Read a target's version for one run (issue 17): from the baseline probes' answers, or
from a version URL with one plain HTTP GET.

What is read is judged by the pure core (:mod:`spikewatch.core.version`); nothing here
ever fails a run: every problem is an ``unknown`` version with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import aiohttp

from spikewatch.config.version import VersionConfig
from spikewatch.core.version import UNKNOWN, TargetVersion, from_json, from_regex, from_values
from spikewatch.engine.connection import ClientConnection

__all__ = [
    "MAX_VERSION_BODY_BYTES",
    "cancelled_version",
    "read_version_url",
    "version_from_probes",
]

#: The most of a version URL's answer that is read; a larger one is refused.
MAX_VERSION_BODY_BYTES = 64 * 1024


def version_from_probes(config: VersionConfig, conns: Iterable[ClientConnection]) -> TargetVersion:
    """Return the version the baseline probes reported: in their 101 answers (``header``),
    or as a capture of their conversation (``capture``)."""
    name = config.capture
    if name is None:
        return from_values((conn.version for conn in conns), config.source)
    return from_values((conn.captures.get(name) for conn in conns), config.source)


async def read_version_url(config: VersionConfig) -> TargetVersion:
    """GET ``config.url`` once, within ``config.timeout``, and read the version from it."""
    assert config.url is not None
    where = config.source
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(config.url, allow_redirects=False) as answer,
        ):
            if answer.status != 200:
                return TargetVersion(UNKNOWN, f"{where}: answered {answer.status}")
            body = await answer.content.read(MAX_VERSION_BODY_BYTES + 1)
    except TimeoutError:
        return TargetVersion(UNKNOWN, f"{where}: no answer within {config.timeout:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # The message never repeats the URL: its query may carry a token.
        return TargetVersion(UNKNOWN, f"{where}: {type(exc).__name__}")
    if len(body) > MAX_VERSION_BODY_BYTES:
        return TargetVersion(UNKNOWN, f"{where}: answer larger than {MAX_VERSION_BODY_BYTES} bytes")
    if config.json_path is not None:
        return from_json(body, config.json_path, where)
    assert config.regex is not None
    return from_regex(body, re.compile(config.regex), where)


def cancelled_version(config: VersionConfig) -> TargetVersion:
    """Return the version of a run that ended before its version URL answered."""
    return TargetVersion(UNKNOWN, f"{config.source}: the run ended before it answered")
