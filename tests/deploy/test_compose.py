"""deploy/compose.yaml: valid Compose, secrets as files, paths that exist, wiring that works.

No container runs here: the file is checked against the Compose specification's schema
(check-jsonschema), and each service's view of its files is rebuilt from the file's
mounts and secrets to check that the configs inside agree with each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from spikewatch.config import parse_config
from tests.deploy import (
    DEPLOY,
    REPO,
    RULES,
    container_files,
    rebase_files,
    require_tool,
    rule_jobs,
)

COMPOSE = DEPLOY / "compose.yaml"
SECRETS_DIR = PurePosixPath("/run/secrets")
#: Environment names that would hold a credential as a value.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PRIVATE_KEY|API_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services: dict[str, Any] = compose["services"]
    assert name in services, f"no service {name!r}"
    return dict(services[name])


def binds(svc: dict[str, Any]) -> dict[str, Path]:
    """Return the service's bind mounts: container path -> host path."""
    mounts: dict[str, Path] = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        elif volume.get("type") == "bind":
            source, target = volume["source"], volume["target"]
        else:
            continue
        if source.startswith((".", "/")):
            mounts[target] = (DEPLOY / source).resolve()
    return mounts


def secret_files(compose: dict[str, Any], svc: dict[str, Any]) -> dict[str, Path]:
    """Return the service's secrets: container path -> host file."""
    mounted: dict[str, Path] = {}
    for entry in svc.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        mounted[str(SECRETS_DIR / target)] = (DEPLOY / compose["secrets"][source]["file"]).resolve()
    return mounted


def option(command: list[str], flag: str) -> str:
    """Return a flag's value in a command line, as ``--flag=value`` or ``--flag value``."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return command[i + 1]
    raise AssertionError(f"{flag} not in {command}")


# --- the file as a whole ----------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    """check-jsonschema accepts the file against the Compose specification's schema."""
    checker = require_tool("check-jsonschema", "check-jsonschema (pip install -e '.[test]')")
    answer = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_secrets_are_files_never_environment_values(compose: dict[str, Any]) -> None:
    """Every secret is a file; no service has a credential in its environment."""
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name}: only file: sources"
        assert (DEPLOY / secret["file"]).is_file(), secret["file"]
    for name, svc in compose["services"].items():
        assert "env_file" not in svc, name
        environment = svc.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        mounted = secret_files(compose, svc)
        for key, value in environment.items():
            if _SECRET_NAME.search(key):
                assert key.endswith("_FILE"), f"{name}: {key} holds a secret as a value"
                assert value in mounted, f"{name}: {key}={value} is not a secret it mounts"


def test_every_mounted_host_path_exists(compose: dict[str, Any]) -> None:
    """Bind mounts, secret files and the build context are all in the repository."""
    paths: list[Path] = []
    for svc in compose["services"].values():
        paths.extend(binds(svc).values())
        paths.extend(secret_files(compose, svc).values())
        if "build" in svc:
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            paths.append((DEPLOY / context / "Dockerfile").resolve())
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"missing: {missing}"
    assert all(p.is_relative_to(REPO) for p in paths), paths


def test_ports_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    """Every published port binds 127.0.0.1."""
    published = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, str):
                assert port.startswith("127.0.0.1:"), f"{name}: {port}"
            else:
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
    assert published >= 4


# --- spikewatch and the target ----------------------------------------------------------


def test_spikewatch_service_is_hardened_and_health_checked(compose: dict[str, Any]) -> None:
    """Built image, read-only root with /tmp in memory, no capabilities, /healthz checked."""
    svc = service(compose, "spikewatch")
    assert svc["image"] == "spikewatch:latest"
    assert svc["build"] == ".."
    assert svc["read_only"] is True
    assert "/tmp" in svc["tmpfs"]  # noqa: S108 - the container's /tmp
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert "http://127.0.0.1:9878/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["depends_on"]["target"]["condition"] == "service_healthy"
    assert svc["command"] == ["run", "--config", "/etc/spikewatch/spikewatch.yaml"]
    target = service(compose, "target")
    assert target["image"] == svc["image"]
    assert target["command"][0] == "target"
    assert target["read_only"] is True


def test_spikewatch_config_is_valid_and_points_at_the_target(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The mounted config validates with the mounted secrets and reaches the target service."""
    svc = service(compose, "spikewatch")
    path = option(svc["command"], "--config")
    mounts = {**binds(svc), **secret_files(compose, svc)}
    document = yaml.safe_load(mounts[path].read_text(encoding="utf-8"))
    root = container_files(tmp_path, {p: h.read_bytes() for p, h in mounts.items()})
    config = parse_config(rebase_files(document, root), source=path, base_dir=root)
    assert config.server.api_token is not None
    assert config.server.port == 9878

    target = service(compose, "target")
    listen_port = int(option(target["command"], "--listen").rsplit(":", 1)[1])
    (checked,) = config.targets
    url = urlsplit(checked.url)
    assert (url.scheme, url.hostname, url.port, url.path) == ("ws", "target", listen_port, "/ws")
    # Tokens verify: spikewatch signs with the very secret the target checks them with.
    assert checked.auth is not None
    signing = document["targets"][0]["auth"]["jwt"]["secret_file"]
    verifying = option(target["command"], "--jwt-secret-file")
    target_secrets = secret_files(compose, target)
    assert mounts[signing] == target_secrets[verifying]
    assert checked.auth.jwt.claims["aud"] == option(target["command"], "--jwt-audience")


# --- Prometheus, Alertmanager, Grafana ---------------------------------------------------


def test_monitoring_services_read_their_configs_from_mounts(compose: dict[str, Any]) -> None:
    """--config.file of Prometheus and Alertmanager names a file mounted from the repo."""
    for name, expected in (
        ("prometheus", DEPLOY / "compose" / "prometheus.yml"),
        ("alertmanager", DEPLOY / "alertmanager" / "alertmanager.yml"),
    ):
        svc = service(compose, name)
        assert binds(svc)[option(svc["command"], "--config.file")] == expected


def test_prometheus_scrapes_spikewatch_and_alerts_alertmanager(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Scrape and alerting targets are compose services; the shipped rules are loaded.

    promtool checks the config as Prometheus would see it in its container, with the
    rules folder beside it, so the rule files it finds are checked too.
    """
    svc = service(compose, "prometheus")
    mounts = binds(svc)
    config_file = option(svc["command"], "--config.file")
    config = yaml.safe_load(mounts[config_file].read_text(encoding="utf-8"))
    scrape = {
        job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
        for job in config["scrape_configs"]
    }
    assert scrape["spikewatch"] == ["spikewatch:9878"]
    # The rules' up{job="spikewatch"} (SpikewatchProberDown) must see this job.
    assert rule_jobs() == {"spikewatch"}
    (alerting,) = config["alerting"]["alertmanagers"]
    assert alerting["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert {"spikewatch", "alertmanager"} <= set(compose["services"])

    # The container's /etc/prometheus, rebuilt: the rule_files globs must find the rules.
    container_dir = PurePosixPath(config_file).parent
    layout = tmp_path / "etc-prometheus"
    for target, host in mounts.items():
        relative = PurePosixPath(target).relative_to(container_dir)
        if host.is_dir():
            shutil.copytree(host, layout / relative)
        else:
            (layout / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(host, layout / relative)
    found = sorted(p for pattern in config["rule_files"] for p in layout.glob(pattern))
    assert [p.name for p in found] == [RULES.name]
    promtool = require_tool("promtool", "prometheus (the Debian package, for promtool)")
    answer = subprocess.run(
        [promtool, "check", "config", str(layout / PurePosixPath(config_file).name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "SUCCESS" in answer.stdout + answer.stderr


def test_grafana_finds_prometheus_and_the_dashboards(compose: dict[str, Any]) -> None:
    """The provisioned datasource is the compose Prometheus; the provider path is mounted."""
    grafana = service(compose, "grafana")
    mounts = binds(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == REPO / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    url = urlsplit(datasource["url"])
    assert (url.hostname, url.port) == ("prometheus", 9090)
    assert "127.0.0.1:9090:9090" in service(compose, "prometheus")["ports"]
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text(encoding="utf-8"))
    # $__rate_interval is built on it: it must be the scrape interval.
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]

    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "spikewatch.yml").read_text(encoding="utf-8")
    )["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert dashboards == REPO / "grafana" / "dashboards"
    assert sorted(dashboards.glob("*.json")), "no dashboards to load"

    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    password = environment["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert password in secret_files(compose, grafana)
