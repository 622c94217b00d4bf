"""A target's ``version:``: exactly one source, each checked where it is written."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from spikewatch.config import TargetConfig
from spikewatch.engine.worker_messages import target_from_wire, target_to_wire


def target(version: Any) -> TargetConfig:
    return TargetConfig.model_validate(
        {"name": "t", "url": "ws://127.0.0.1/ws", "version": version}
    )


def problems(version: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        target(version)
    return str(caught.value)


@pytest.mark.parametrize(
    ("version", "source"),
    [
        ({"header": "X-App-Version"}, "header X-App-Version"),
        ({"header": "X-App-Version", "url": None}, "header X-App-Version"),
        ({"url": "http://127.0.0.1:8080/info?x=1", "json": "build.version"}, "url /info"),
        ({"url": "https://app.example/", "regex": "v(?P<version>[0-9.]+)"}, "url /"),
    ],
)
def test_each_source_loads_and_names_itself(version: dict[str, str], source: str) -> None:
    """A header, a url with json, and a url with regex each load; the source omits the query."""
    loaded = target(version).version
    assert loaded is not None
    assert loaded.source == source


def test_no_version_is_none() -> None:
    """Without version: a target reads no version."""
    assert TargetConfig.model_validate({"name": "t", "url": "ws://h/"}).version is None


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ({}, "needs exactly one of header, url or capture"),
        ({"header": "X-V", "url": "http://h/", "json": "v"}, "needs exactly one of header"),
        ({"url": "http://h/"}, "needs exactly one of json or regex beside it"),
        ({"url": "http://h/", "json": "v", "regex": "(?P<version>.)"}, "exactly one of json"),
        ({"header": "X-V", "json": "v"}, "json and regex read the answer of url"),
        ({"header": "bad header"}, "is not a valid header name"),
        ({"url": "ftp://h/", "json": "v"}, "must be an http:// or https:// URL"),
        ({"url": "http://u:p@h/", "json": "v"}, "must not carry user:password@"),
        ({"url": "http://h:99999/", "json": "v"}, "is not a valid URL"),
        ({"url": "http://h/ x", "json": "v"}, "must be ASCII without spaces"),
        ({"url": "http://h/", "json": "a..b"}, "must be a dotted path"),
        ({"url": "http://h/", "regex": "v([0-9]+)"}, "must have a named group (?P<version>...)"),
        ({"url": "http://h/", "regex": "("}, "is not a valid regular expression"),
        ({"capture": "version"}, "needs a conversation step that captures it"),
        ({"capture": "1bad"}, "must be a capture name"),
        ({"url": "http://h/", "json": "v", "timeout": "31s"}, "less than or equal to 30"),
    ],
)
def test_bad_versions_are_config_errors_at_their_field(
    version: dict[str, str], message: str
) -> None:
    """Each mistake is reported with what to do about it."""
    assert message in problems(version)


def test_the_version_travels_to_workers_and_back() -> None:
    """The wire form (field names) validates back into the same config."""
    config = target({"url": "http://h/v", "json": "a.b", "timeout": "1s"})
    assert target_from_wire(target_to_wire(config)) == config


def test_a_capture_source_names_a_capture_of_the_conversation() -> None:
    """capture: must be captured by a step; the problem lists what is captured."""
    steps = [{"name": "hello", "expect": {"match": '"version":"(?P<v>[^"]+)"'}}]
    doc = {"name": "t", "url": "ws://127.0.0.1/ws", "conversation": steps}
    loaded = TargetConfig.model_validate({**doc, "version": {"capture": "v"}}).version
    assert loaded is not None
    assert loaded.source == "capture v"
    with pytest.raises(ValidationError) as caught:
        TargetConfig.model_validate({**doc, "version": {"capture": "version"}})
    assert "version.capture" in str(caught.value)
    assert "no conversation step captures 'version' (captured: v)" in str(caught.value)
