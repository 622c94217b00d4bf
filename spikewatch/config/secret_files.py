"""The files a config names: the API token and JWT keys read in, TLS files checked.

Run once the config has validated, so that a path is known to be where a file belongs.
A file's contents are never shown: a problem names the field and the path only.

Hand-written: pydantic-settings' ``SecretsSettingsSource`` reads one file per field from a
secrets folder, named after the field (the Docker and Kubernetes layout); a config here
names each file by its own path, relative to the config file, in fields of list items
(``targets[0].auth.jwt.secret_file``), which that source cannot reach.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from spikewatch.config.auth import JwtConfig, is_pem_private_key
from spikewatch.config.model import SpikewatchConfig
from spikewatch.config.problems import os_error_reason
from spikewatch.config.server import ServerConfig
from spikewatch.config.target import TargetConfig
from spikewatch.errors import ConfigProblem

__all__ = ["MAX_FILE_BYTES", "read_files"]

#: A secret or key file is small; a bound keeps /dev/zero from eating the memory.
MAX_FILE_BYTES: Final = 1 << 20


def read_files(
    config: SpikewatchConfig, base_dir: Path
) -> tuple[SpikewatchConfig, list[ConfigProblem]]:
    """Read the token and keys into the config, and check that the TLS files are readable."""
    problems: list[ConfigProblem] = []
    server = _read_server_files(config.server, base_dir, problems)
    targets = tuple(
        _read_target_files(target, f"targets[{i}]", base_dir, problems)
        for i, target in enumerate(config.targets)
    )
    return config.model_copy(update={"server": server, "targets": targets}), problems


def _read_server_files(
    server: ServerConfig, base_dir: Path, problems: list[ConfigProblem]
) -> ServerConfig:
    if server.api_token_file is None:
        return server
    path = base_dir / server.api_token_file
    text = _read_text(path, "server.api_token_file", problems)
    if text is None:
        return server
    token = text.strip()
    if not token:
        problems.append(ConfigProblem("server.api_token_file", f"{path} is empty"))
        return server
    return server.model_copy(update={"api_token_file": path, "api_token": SecretStr(token)})


def _read_target_files(
    target: TargetConfig, at: str, base_dir: Path, problems: list[ConfigProblem]
) -> TargetConfig:
    update: dict[str, Any] = {}
    tls_paths: dict[str, Path] = {}
    for name, relative in target.tls.files.items():
        path = base_dir / relative
        if _readable(path, f"{at}.tls.{name}", problems):
            tls_paths[name] = path
    if tls_paths:
        update["tls"] = target.tls.model_copy(update=tls_paths)
    if target.auth is not None:
        jwt = _read_jwt_files(target.auth.jwt, f"{at}.auth.jwt", base_dir, problems)
        update["auth"] = target.auth.model_copy(update={"jwt": jwt})
    return target.model_copy(update=update) if update else target


def _read_jwt_files(
    jwt: JwtConfig, at: str, base_dir: Path, problems: list[ConfigProblem]
) -> JwtConfig:
    if jwt.secret_file is not None:
        path = base_dir / jwt.secret_file
        text = _read_text(path, f"{at}.secret_file", problems)
        if text is None:
            return jwt
        # Stripped: a secret file written with `echo` ends with a newline nobody meant.
        secret = text.strip()
        if not secret:
            problems.append(ConfigProblem(f"{at}.secret_file", f"{path} is empty"))
            return jwt
        return jwt.model_copy(update={"secret_file": path, "secret": SecretStr(secret)})
    if jwt.private_key_file is not None:
        path = base_dir / jwt.private_key_file
        text = _read_text(path, f"{at}.private_key_file", problems)
        if text is None:
            return jwt
        if not is_pem_private_key(text):
            problems.append(
                ConfigProblem(f"{at}.private_key_file", f"{path} is not a PEM private key")
            )
            return jwt
        return jwt.model_copy(update={"private_key_file": path, "private_key": SecretStr(text)})
    return jwt


def _read_text(path: Path, at: str, problems: list[ConfigProblem]) -> str | None:
    """Return the file's text, or None after adding a problem; never show its contents."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(ConfigProblem(at, f"cannot read {path}: {os_error_reason(exc)}"))
        return None
    if len(data) > MAX_FILE_BYTES:
        problems.append(ConfigProblem(at, f"{path} is larger than {MAX_FILE_BYTES} bytes"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(ConfigProblem(at, f"{path} is not UTF-8 text"))
        return None


def _readable(path: Path, at: str, problems: list[ConfigProblem]) -> bool:
    """Return whether the file can be read, after adding a problem if not."""
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        problems.append(ConfigProblem(at, f"cannot read {path}: {os_error_reason(exc)}"))
        return False
    return True
