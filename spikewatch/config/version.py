"""A target's ``version:``: where each run reads the version of the target it measured.

Exactly one source (issue 17)::

    version: {header: X-App-Version}                       # a header of the 101 answer
    version: {url: http://app:8080/version, json: build.version}
    version: {url: http://app:8080/version, regex: 'v(?P<version>[0-9.]+)'}
    version: {capture: version}                            # a conversation capture

The value read is cleaned by :func:`spikewatch.core.version.clean_version`; a target that
does not answer gives ``unknown``, never a failed run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Self
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from spikewatch.config.durations import PositiveDuration
from spikewatch.config.fields import ConfigSection, compile_regex
from spikewatch.config.problems import Problems, invalid

__all__ = ["VersionConfig", "capture_problem"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_CAPTURE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


class VersionConfig(ConfigSection):
    """Where a target's version is read, once per run."""

    # ``json`` is the key users write; ``json_path`` the field (``json`` would shadow
    # BaseModel's method); both load, so the worker wire form validates back.
    model_config = ConfigDict(**ConfigSection.model_config, populate_by_name=True)

    #: A header of the upgrade's 101 answer (the baseline probes' answers).
    header: str | None = None
    #: A plain HTTP GET of this URL, with ``json`` (a dotted path) or ``regex``.
    url: str | None = None
    json_path: str | None = Field(default=None, alias="json")
    regex: str | None = None
    #: A capture of the target's conversation.
    capture: str | None = None
    #: How long the GET of ``url`` may take.
    timeout: PositiveDuration = Field(default=2.0, le=30.0)

    @field_validator("header")
    @classmethod
    def _check_header(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN.fullmatch(value):
            raise ValueError("is not a valid header name")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.isascii() or any(c.isspace() for c in value):
            raise ValueError("must be ASCII without spaces")
        try:
            parts = urlsplit(value)
            _ = parts.port
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL naming a host")
        if "@" in parts.netloc:
            raise ValueError("must not carry user:password@")
        return value

    @field_validator("json_path")
    @classmethod
    def _check_json(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.fullmatch(value):
            raise ValueError("must be a dotted path, like build.version or items.0.tag")
        return value

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is not None and "version" not in compile_regex(value).groupindex:
            raise ValueError("must have a named group (?P<version>...)")
        return value

    @field_validator("capture")
    @classmethod
    def _check_capture(cls, value: str | None) -> str | None:
        if value is not None and not _CAPTURE.fullmatch(value):
            raise ValueError("must be a capture name, like version")
        return value

    @model_validator(mode="after")
    def _check_one_source(self) -> Self:
        sources = [
            name
            for name, value in (
                ("header", self.header),
                ("url", self.url),
                ("capture", self.capture),
            )
            if value is not None
        ]
        problems: Problems = []
        if len(sources) != 1:
            problems.append(("", "needs exactly one of header, url or capture"))
        if self.url is not None and (self.json_path is None) == (self.regex is None):
            problems.append(("url", "needs exactly one of json or regex beside it"))
        if self.url is None and (self.json_path is not None or self.regex is not None):
            problems.append(("url", "json and regex read the answer of url: set url"))
        if problems:
            raise invalid(problems)
        return self

    @property
    def source(self) -> str:
        """Say where the version is read, for the run's detail."""
        if self.header is not None:
            return f"header {self.header}"
        if self.capture is not None:
            return f"capture {self.capture}"
        return f"url {urlsplit(self.url or '').path or '/'}"


def capture_problem(version: VersionConfig | None, captures: Iterable[str]) -> str | None:
    """Say what is wrong with a ``capture`` source, given what the target's steps capture."""
    if version is None or version.capture is None:
        return None
    known = sorted(set(captures))
    if version.capture in known:
        return None
    if not known:
        return "needs a conversation step that captures it (the target has none)"
    return f"no conversation step captures {version.capture!r} (captured: {', '.join(known)})"
