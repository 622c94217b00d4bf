"""Show the effective config, as ``spikewatch check-config`` prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, SecretStr

from spikewatch.config.model import SpikewatchConfig

__all__ = ["MASK", "public_url", "render_effective_config"]

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


def _plain(value: Any) -> Any:
    # Walk the models rather than model_dump(): every SecretStr is masked by type, so a
    # secret field added later cannot slip through.
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, BaseModel):
        plain = {name: _plain(getattr(value, name)) for name in type(value).model_fields}
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
