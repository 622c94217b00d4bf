"""The effective config as check-config prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spikewatch.config import parse_config, render_effective_config
from spikewatch.config.render import secret_values

PEM = "-----BEGIN PRIVATE KEY-----\npem-hunter2\n-----END PRIVATE KEY-----\n"


def rendered(tmp_path: Path) -> tuple[str, Any]:
    (tmp_path / "jwt.key").write_text("file-hunter2\n", encoding="utf-8")
    cfg = parse_config(
        {
            "server": {"api_token": "token-hunter2"},
            "targets": [
                {
                    "name": "chat",
                    "url": "wss://chat.test/ws",
                    "headers": {"X-Client": "spikewatch", "Cookie": "cookie-hunter2"},
                    "auth": {"jwt": {"secret_file": "jwt.key", "ttl": "5m"}},
                },
                {
                    "name": "feed",
                    "url": "wss://feed.test/ws",
                    "headers": {"Authorization": "Basic basic-hunter2"},
                    "auth": {
                        "jwt": {"algorithm": "RS256", "private_key": PEM, "send_as": "query:t"}
                    },
                },
            ],
            "scenarios": [{"name": "burst", "spike": {"connections": 5}, "hold": "1m30s"}],
        },
        base_dir=tmp_path,
    )
    text = render_effective_config(cfg)
    return text, yaml.safe_load(text)


def test_render_masks_every_secret(tmp_path: Path) -> None:
    """The API token, JWT secrets and keys, and every header value are shown as ***."""
    text, data = rendered(tmp_path)
    for secret in (
        "token-hunter2",
        "file-hunter2",
        "pem-hunter2",
        "cookie-hunter2",
        "basic-hunter2",
    ):
        assert secret not in text
    assert data["server"]["api_token"] == "***"
    assert data["targets"][0]["auth"]["jwt"]["secret"] == "***"
    assert data["targets"][1]["auth"]["jwt"]["private_key"] == "***"
    assert data["targets"][0]["headers"] == {"X-Client": "***", "Cookie": "***"}
    assert data["targets"][1]["headers"] == {"Authorization": "***"}


def test_render_shows_file_paths_defaults_and_seconds(tmp_path: Path) -> None:
    """Files are shown as paths, defaults are filled in, durations are seconds."""
    text, data = rendered(tmp_path)
    assert text.startswith("# effective spikewatch config")
    assert data["targets"][0]["auth"]["jwt"]["secret_file"] == str(tmp_path / "jwt.key")
    assert data["targets"][0]["auth"]["jwt"]["ttl"] == 300.0
    assert data["targets"][1]["auth"]["jwt"]["secret"] is None
    assert data["limits"] == {
        "max_connections": 2000,
        "max_concurrent_runs": 1,
        "max_receive_buffer_bytes": 64 * 1024 * 1024,
    }
    scenario = data["scenarios"][0]
    assert scenario["hold"] == 90.0
    assert scenario["schedule"] == {"every": 900.0, "jitter": 0.0, "cron": None, "timezone": "UTC"}
    assert scenario["recovery"]["slack"] == 0.005
    assert list(data) == [
        "server", "limits", "prober", "log", "sharding", "storage", "targets", "scenarios"
    ]  # fmt: skip


def test_secret_values_lists_what_check_config_masks() -> None:
    """secret_values: every SecretStr, header value and URL query value of the config."""
    cfg = parse_config(
        {
            "server": {"api_token": "api-token-value"},
            "targets": [
                {
                    "name": "t",
                    "url": "ws://127.0.0.1:1/ws?token=query-value&v=2",
                    "headers": {"X-Api-Key": "header-value"},
                    "auth": {"jwt": {"algorithm": "HS256", "secret": "jwt-secret-value"}},
                }
            ],
            "scenarios": [{"name": "s", "spike": {"connections": 1}}],
        }
    )
    found = set(secret_values(cfg))
    assert {"api-token-value", "query-value", "2", "header-value", "jwt-secret-value"} <= found
