"""The Kubernetes manifests: what ``kubectl kustomize`` renders from base and the overlay.

Every rendered object is checked against the Kubernetes API schemas (kubernetes-validate)
or, for the Prometheus Operator's ServiceMonitor and PrometheusRule, structurally here;
the ConfigMap's config is loaded as its container would load it; the PrometheusRule must
be a fresh generation from the rules file Prometheus uses.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from spikewatch.config import load_config, parse_config
from spikewatch.daemon.sharding import Shard, resolve_shard
from tests.deploy import (
    DEPLOY,
    RULES,
    container_files,
    file_fields,
    rebase_files,
    require_tool,
    rule_jobs,
)

KUBERNETES = DEPLOY / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "overlays" / "example"
GENERATOR = KUBERNETES / "prometheusrule.py"
#: The API version the objects are validated against (the pod-index label needs 1.28).
KUBERNETES_VERSION = "1.30.0"
#: The Secrets a user creates for base, with the keys its config reads (deploy/README.md).
USER_SECRETS = {"spikewatch-api-token": ("token",), "spikewatch-jwt": ("secret",)}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"

Objects = list[dict[str, Any]]


# --- rendering -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubectl() -> str:
    """Return kubectl, failing unless its kustomize is v5 or later."""
    path = require_tool("kubectl", "kubernetes-client (kubectl with kustomize v5, 1.27+)")
    answer = subprocess.run(
        [path, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    version = json.loads(answer.stdout or "{}")
    kustomize = version.get("kustomizeVersion", "")
    match = re.match(r"v(\d+)\.", kustomize)
    if match is None or int(match.group(1)) < 5:
        client = version.get("clientVersion", {}).get("gitVersion", "?")
        pytest.fail(
            f"kubectl {client} embeds kustomize {kustomize or 'older than v4'}; the manifests"
            " use kustomize v5 (replicas, replacements): install kubectl 1.27 or later"
            " (Debian bookworm's kubernetes-client 1.20 is too old)",
            pytrace=False,
        )
    return path


def kustomize(kubectl: str, folder: Path) -> Objects:
    """Return the objects ``kubectl kustomize folder`` renders."""
    answer = subprocess.run(
        [kubectl, "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert answer.returncode == 0, answer.stderr
    return [o for o in yaml.safe_load_all(answer.stdout) if o]


@pytest.fixture(scope="module")
def base(kubectl: str) -> Objects:
    return kustomize(kubectl, BASE)


@pytest.fixture(scope="module")
def overlay(kubectl: str) -> Objects:
    return kustomize(kubectl, OVERLAY)


@pytest.fixture(params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest) -> Objects:
    """Each rendering in turn: what holds for base must hold for every overlay too."""
    objects: Objects = request.getfixturevalue(request.param)
    return objects


def find(objects: Objects, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, rendered {len(found)}"
    return found[0]


def pod_of(objects: Objects) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return the StatefulSet, its pod spec and its spikewatch container."""
    statefulset = one(objects, "StatefulSet", "spikewatch")
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = (c for c in pod["containers"] if c["name"] == "spikewatch")
    return statefulset, pod, container


def volumes_of(statefulset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the pod's volumes by name, its claim templates as persistentVolumeClaim ones."""
    spec = statefulset["spec"]
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    for claim in spec.get("volumeClaimTemplates", []):
        name = claim["metadata"]["name"]
        volumes[name] = {"name": name, "persistentVolumeClaim": claim["spec"]}
    return volumes


def mounted_files(objects: Objects) -> dict[str, bytes]:
    """Return the files the container sees from its ConfigMap and Secret volumes.

    A Secret that the rendering does not hold is one the user creates: it gets fake
    values for the keys :data:`USER_SECRETS` documents.
    """
    statefulset, _, container = pod_of(objects)
    volumes = volumes_of(statefulset)
    files: dict[str, bytes] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
            data = {k: v.encode() for k, v in config_map["data"].items()}
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            secrets = find(objects, "Secret", name)
            if secrets:
                data = {k: base64.b64decode(v) for k, v in secrets[0]["data"].items()}
            else:
                data = {k: f"fake {name} {k} for the test".encode() for k in USER_SECRETS[name]}
        else:
            continue
        files.update({f"{mount['mountPath']}/{key}": value for key, value in data.items()})
    return files


def config_path(container: dict[str, Any]) -> str:
    args = container["args"]
    return str(args[args.index("--config") + 1])


# --- schemas ---------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
_RULE_KEYS = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
_GROUP_KEYS = {"name", "interval", "rules", "limit", "partial_response_strategy", "query_offset"}


def check_servicemonitor(monitor: dict[str, Any]) -> None:
    """Check a ServiceMonitor's required fields (monitoring.coreos.com/v1)."""
    spec = monitor["spec"]
    assert isinstance(spec["selector"].get("matchLabels"), dict)
    assert spec["endpoints"], "a ServiceMonitor without endpoints scrapes nothing"
    for endpoint in spec["endpoints"]:
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"].startswith("/")
        for key in ("interval", "scrapeTimeout"):
            assert key not in endpoint or _DURATION.fullmatch(endpoint[key]), endpoint


def check_prometheusrule(rule: dict[str, Any]) -> None:
    """Check a PrometheusRule's required fields (monitoring.coreos.com/v1)."""
    groups = rule["spec"]["groups"]
    assert groups
    names = [g["name"] for g in groups]
    assert len(set(names)) == len(names), f"group names must be unique: {names}"
    for group in groups:
        assert set(group) <= _GROUP_KEYS, set(group) - _GROUP_KEYS
        assert group["rules"], f"group {group['name']} has no rules"
        for item in group["rules"]:
            assert set(item) <= _RULE_KEYS, set(item) - _RULE_KEYS
            assert ("record" in item) != ("alert" in item), item
            assert isinstance(item["expr"], str | int), item
            for key in ("for", "keep_firing_for"):
                assert key not in item or _DURATION.fullmatch(item[key]), item


CUSTOM_RESOURCES: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
}


def test_every_rendered_object_matches_its_schema(rendered: Objects) -> None:
    """Every object is valid for the Kubernetes API (strictly: no unknown fields)."""
    try:
        import kubernetes_validate  # noqa: PLC0415 - a test dependency; its absence must fail
    except ImportError:
        pytest.fail("kubernetes-validate is not installed (pip install -e '.[test]')")
    kinds = set()
    for obj in rendered:
        kinds.add(obj["kind"])
        custom = CUSTOM_RESOURCES.get((obj["apiVersion"], obj["kind"]))
        if custom is not None:
            custom(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert {"StatefulSet", "Service", "ConfigMap", "ServiceMonitor", "PrometheusRule"} <= kinds


# --- the PrometheusRule ----------------------------------------------------------------


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prometheusrule", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_prometheusrule_is_a_fresh_generation() -> None:
    """base/prometheusrule.yaml is exactly what the generator makes of the rules file."""
    generator = load_generator()
    committed = (BASE / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == generator.render(RULES.read_text(encoding="utf-8")), (
        "out of date: run python3 deploy/kubernetes/prometheusrule.py"
    )


def test_rendered_prometheusrule_holds_exactly_the_shipped_rules(rendered: Objects) -> None:
    """The PrometheusRule's spec.groups are the rules file's groups, value for value."""
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert one(rendered, "PrometheusRule")["spec"]["groups"] == shipped


@pytest.fixture
def generator_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The generator, writing to a copy of the committed PrometheusRule in tmp_path."""
    generator = load_generator()
    output = tmp_path / "prometheusrule.yaml"
    output.write_bytes((BASE / "prometheusrule.yaml").read_bytes())
    monkeypatch.setattr(generator, "OUTPUT", output)
    return generator


def test_generator_check_passes_on_the_committed_file(generator_output: ModuleType) -> None:
    """--check exits 0 while the file is current, and writes nothing."""
    before = generator_output.OUTPUT.read_bytes()
    assert generator_output.main(["--check"]) == 0
    assert generator_output.OUTPUT.read_bytes() == before


def test_generator_check_fails_on_drift_and_regeneration_repairs_it(
    generator_output: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand edit is caught by --check (exit 1); running the generator restores the file."""
    output: Path = generator_output.OUTPUT
    fresh = output.read_text(encoding="utf-8")
    output.write_text(fresh.replace("spec:", "spec:  # edited by hand", 1), encoding="utf-8")
    assert generator_output.main(["--check"]) == 1
    assert "python3 deploy/kubernetes/prometheusrule.py" in capsys.readouterr().err
    assert generator_output.main([]) == 0
    assert output.read_text(encoding="utf-8") == fresh


def test_generator_keeps_every_string_of_the_rules_exactly() -> None:
    """Multi-line PromQL and templates survive the block style the generator writes."""
    generator = load_generator()
    text = yaml.safe_dump(
        {
            "groups": [
                {
                    "name": "g",
                    "rules": [
                        {
                            "alert": "A",
                            "expr": 'max by (target) (\n  x{job="spikewatch"}\n) > 1\n',
                            "annotations": {
                                "description": "trailing space \nand {{ $labels.target }}",
                                "summary": "no newline at the end\n\n",
                            },
                        }
                    ],
                }
            ]
        }
    )
    assert yaml.safe_load(generator.render(text))["spec"]["groups"] == generator.load_groups(text)
    with pytest.raises(ValueError, match="groups"):
        generator.render("rules: []\n")


# --- the StatefulSet -------------------------------------------------------------------


def test_statefulset_probes_resources_and_lifecycle(rendered: Objects) -> None:
    """Liveness on /healthz, readiness on /readyz, resources set, 15 s to stop, /tmp writable,
    the run history on a volume claim of its own."""
    statefulset, pod, container = pod_of(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9878}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert pod["terminationGracePeriodSeconds"] == 15
    assert config_path(container) == "/etc/spikewatch/spikewatch.yaml"
    volumes = volumes_of(statefulset)
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]  # noqa: S108 - the container's /tmp
    assert "configMap" in mounts["/etc/spikewatch"]
    claim = mounts["/var/lib/spikewatch"]["persistentVolumeClaim"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    assert claim["resources"]["requests"]["storage"] == "1Gi"


def test_statefulset_security_context_is_restrictive(rendered: Objects) -> None:
    """Non-root 10001, read-only root, no privilege escalation, no capabilities, seccomp."""
    _, pod, container = pod_of(rendered)
    security = container["securityContext"]
    # The pod's settings hold for the container, unless the container overrides them.
    effective = {**pod["securityContext"], **security}
    assert effective["runAsNonRoot"] is True
    assert effective["runAsUser"] == 10001
    assert effective["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    # Service links would put SPIKEWATCH_SERVICE_HOST and friends in the config's prefix.
    assert pod["enableServiceLinks"] is False


def test_replicas_are_spread_across_nodes(rendered: Objects) -> None:
    """A preferred anti-affinity on the host name selects the StatefulSet's own pods."""
    statefulset, pod, _ = pod_of(rendered)
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector == statefulset["spec"]["selector"]["matchLabels"]


# --- Services and the ServiceMonitor ---------------------------------------------------


def test_services_and_servicemonitor_reach_the_pods(rendered: Objects) -> None:
    """Both Services select the pods; the ServiceMonitor scrapes /metrics through one only."""
    statefulset, _, container = pod_of(rendered)
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container["ports"]}
    services = find(rendered, "Service")
    for service in services:
        assert service["spec"]["selector"].items() <= pod_labels.items(), service
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    headless = one(rendered, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    http = one(rendered, "Service", "spikewatch")
    assert [(p["name"], p["port"]) for p in http["spec"]["ports"]] == [("http", 9878)]
    monitor = one(rendered, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    # One Service only, or Prometheus scrapes every pod twice.
    assert [s for s in services if wanted <= s["metadata"]["labels"].items()] == [http]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    # The operator's job label is the Service's name unless jobLabel says otherwise; the
    # rules' up{job="spikewatch"} (SpikewatchProberDown) must see it.
    assert "jobLabel" not in monitor["spec"]
    assert rule_jobs() == {http["metadata"]["name"]}


# --- config, secrets and sharding ------------------------------------------------------


def test_config_map_holds_a_config_spikewatch_accepts(rendered: Objects, tmp_path: Path) -> None:
    """The mounted config validates, reading its secrets from the mounted Secret volumes."""
    _, _, container = pod_of(rendered)
    files = mounted_files(rendered)
    path = config_path(container)
    document = yaml.safe_load(files[path])
    secrets = set(file_fields(document).values())
    assert secrets, "the config reads no secret files"
    assert all(s.startswith("/run/secrets/") for s in secrets), secrets
    root = container_files(tmp_path, files)
    config = parse_config(rebase_files(document, root), source=path, base_dir=root)
    assert config.server.port == 9878
    assert config.server.api_token is not None
    for target in config.targets:
        assert target.auth is not None
        assert target.auth.jwt.secret is not None


def test_every_replica_gets_its_shard(rendered: Objects, tmp_path: Path) -> None:
    """SPIKEWATCH_SHARDING__REPLICAS is the StatefulSet's replicas; each pod's index is its own.

    The index comes from the pod-index label; where that label is missing (Kubernetes
    before 1.28) the value is empty, and the ordinal ending the pod's host name is used.
    """
    statefulset, _, container = pod_of(rendered)
    replicas = statefulset["spec"]["replicas"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SPIKEWATCH_SHARDING__REPLICAS"]["value"] == str(replicas)
    assert env["SPIKEWATCH_SHARDING__INDEX"]["valueFrom"] == {"fieldRef": {"fieldPath": POD_INDEX}}
    files = mounted_files(rendered)
    document = yaml.safe_load(files[config_path(container)])
    root = container_files(tmp_path, files)
    config_file = tmp_path / "spikewatch.yaml"
    config_file.write_text(yaml.safe_dump(rebase_files(document, root)), encoding="utf-8")
    name = statefulset["metadata"]["name"]
    for index in [*range(replicas), None]:
        environ = {
            "SPIKEWATCH_SHARDING__REPLICAS": env["SPIKEWATCH_SHARDING__REPLICAS"]["value"],
            "SPIKEWATCH_SHARDING__INDEX": "" if index is None else str(index),
        }
        config = load_config(config_file, environ=environ)
        hostname = f"{name}-{replicas - 1 if index is None else index}"
        expected = Shard(replicas - 1 if index is None else index, replicas)
        assert resolve_shard(config.sharding, hostname) == expected
        for scenario in config.scenarios:
            assert scenario.schedule.jitter == 0, f"{scenario.name}: replicas would not align"


def test_base_commits_no_secret_values(base: Objects) -> None:
    """Base only refers to the Secrets the user creates, and runs one replica."""
    assert find(base, "Secret") == []
    _, pod, _ = pod_of(base)
    referenced = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert referenced == set(USER_SECRETS)
    assert one(base, "StatefulSet")["spec"]["replicas"] == 1


def test_overlay_scales_to_four_sharded_replicas_in_its_namespace(overlay: Objects) -> None:
    """4 replicas, a pinned image, its own namespace, and clearly fake example Secrets."""
    statefulset, _, container = pod_of(overlay)
    assert statefulset["spec"]["replicas"] == 4
    assert container["image"] == "registry.example.com/spikewatch:0.1.0"
    namespace = one(overlay, "Namespace")["metadata"]["name"]
    assert namespace == "spikewatch-example"
    for obj in overlay:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
    secrets = find(overlay, "Secret")
    generated = {s["metadata"]["name"].rsplit("-", 1)[0]: s for s in secrets}
    assert set(generated) == set(USER_SECRETS)
    for name, secret in generated.items():
        assert set(secret["data"]) == set(USER_SECRETS[name])
        for value in secret["data"].values():
            assert b"example" in base64.b64decode(value)


def test_overlay_config_targets_its_own_url(overlay: Objects, base: Objects) -> None:
    """The overlay replaces the config: its target URL is not the base's placeholder."""

    def urls(objects: Objects) -> list[str]:
        document = yaml.safe_load(mounted_files(objects)["/etc/spikewatch/spikewatch.yaml"])
        return [t["url"] for t in document["targets"]]

    assert urls(overlay) != urls(base)
