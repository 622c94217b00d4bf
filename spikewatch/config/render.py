"""Show the effective config, as ``spikewatch check-config`` prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, SecretStr

from spikewatch.config.model import SpikewatchConfig

__all__ = ["MASK", "public_url", "render_effective_config", "secret_values"]

#: What a secret is shown as.
MASK: Final = "***"


def render_effective_config(cfg: SpikewatchConfig) -> str:
    """Return ``cfg`` as YAML, defaults filled in, durations in seconds, secrets masked."""
    header = "# effective spikewatch config: durations in seconds, secrets shown as ***\n"
    body = yaml.safe_dump(_plain(cfg), sort_keys=False, allow_unicode=True)
    return header + body


def public_url(url: str) -> str:
    """Return ``url`` safe to show: no userinfo, query values masked (they may be tokens)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(name, MASK) for name, _ in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secret_values(cfg: SpikewatchConfig) -> list[str]:
    """Return every value in ``cfg`` that ``check-config`` masks: the values to redact.

    Every ``SecretStr`` (by type, as :func:`_plain` masks them), every header value,
    every URL's query values (a URL cannot carry a password: the config refuses one).
    """
    found: list[str] = []
    _collect(cfg, found)
    return found


def _collect(value: Any, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            item = getattr(value, name)
            if name == "headers" and isinstance(item, dict):
                found.extend(str(v) for v in item.values())
            elif name == "url" and isinstance(item, str):
                parts = urlsplit(item)
                found.extend(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
            else:
                _collect(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)


def _plain(value: Any) -> Any:
    # Walk the models rather than model_dump(): every SecretStr is masked by type, so a
    # secret field added later cannot slip through.
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, BaseModel):
        # A field's alias is the key users write (a target version's ``json``).
        fields = type(value).model_fields
        plain = {fields[name].alias or name: _plain(getattr(value, name)) for name in fields}
        if "headers" in plain:
            # Static credentials ride in custom headers too (X-Api-Key, X-Auth-Token, ...)
            # and the config cannot know what each one carries: show names, never values.
            plain["headers"] = dict.fromkeys(plain["headers"], MASK)
        if isinstance(plain.get("url"), str):
            plain["url"] = public_url(plain["url"])  # a token may ride in the query
        return plain
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
