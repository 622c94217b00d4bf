"""The image from the Dockerfile, built with podman and run as users run it.

How podman works on these machines (no Docker engine, no registry, no systemd): a
containers.conf with ``default_ulimits = []``, ``--runtime runc --cgroup-manager=cgroupfs``,
``--network host``, and a base image made with debootstrap from the host's Debian mirror
(``localhost/spikewatch-base:test``, made once and kept) standing in for the official
Python image, which cannot be pulled here. The daemon runs with a read-only root, a tmpfs
on /tmp, no capabilities, a config mounted read-only, and probes a reference target that
this process serves on 127.0.0.1.

Run alone with ``pytest -m container``. Missing podman, runc or debootstrap fail the test
with the Debian packages to install (tests/run.sh installs them when run as root).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spikewatch.target import RunningTarget, TargetBehaviour, start_reference_target
from tests.conftest import scaled

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "requirements.lock"
BASE_IMAGE = "localhost/spikewatch-base:test"
IMAGE = "localhost/spikewatch:test"
UID = 10001
CONFIG_IN_CONTAINER = "/etc/spikewatch/spikewatch.yaml"
#: Every container this module starts is named ``<prefix><pid>-<random>``: leftovers of an
#: aborted run are recognised by their dead pid and removed, concurrent runs are left alone.
NAME_PREFIX = "spikewatch-ctest-"
PACKAGES = ("podman", "runc", "debootstrap")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_SUITE = "bookworm"
#: Outputs a failure message shows, at most.
TAIL = 4000


def elapsed(start: float) -> str:
    return f"{time.monotonic() - start:.1f}s"


def log(message: str) -> None:
    print(f"[container] {message}", flush=True)


def which(command: str) -> str | None:
    """Find ``command`` on PATH or in the sbin directories (debootstrap lives in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(command, path=path)


def require_tools() -> dict[str, str]:
    """Return podman, runc and debootstrap; fail (never skip) naming the Debian packages."""
    found = {name: which(name) for name in PACKAGES}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: the container test needs the Debian packages "
            f"{' '.join(PACKAGES)}: apt-get install -y {' '.join(PACKAGES)} "
            "(tests/run.sh installs them when run as root)",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail(
            "the container test runs podman and debootstrap as root (CI runs the suite as root)",
            pytrace=False,
        )
    return {name: path for name, path in found.items() if path is not None}


def run(argv: list[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; fail with its output when it exits non-zero or outlives ``timeout``."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=scaled(timeout), check=False, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-TAIL:]
        raise AssertionError(
            f"{' '.join(argv)} did not finish within {exc.timeout:.0f}s\n{out!r}"
        ) from None
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout: {done.stdout[-TAIL:]}\nstderr: {done.stderr[-TAIL:]}"
        )
    return done


class Podman:
    """The podman command line with the settings these machines need."""

    def __init__(self, executable: str, conf: Path) -> None:
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.argv = [executable, "--runtime", "runc", "--cgroup-manager=cgroupfs"]
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, timeout: float = 60, **kwargs: Any) -> str:
        return run([*self.argv, *args], timeout=timeout, env=self.env, **kwargs).stdout

    def ok(self, *args: str, timeout: float = 60) -> bool:
        """Run a command and return whether it exited 0."""
        done = subprocess.run(
            [*self.argv, *args],
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
            env=self.env,
            check=False,
        )
        return done.returncode == 0

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(self(kind, "inspect", name))
        return document[0]

    def remove_leftovers(self) -> None:
        """Remove containers of earlier runs of this module whose process is gone."""
        names = self("ps", "--all", "--format", "{{.Names}}").split()
        for name in names:
            match = re.fullmatch(re.escape(NAME_PREFIX) + r"(\d+)-\w+", name)
            if match is None or _alive(int(match.group(1))):
                continue
            log(f"removing {name}, left over by an aborted run")
            self.ok("rm", "--force", "--time", "0", name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def debian_mirror() -> str:
    """Return the Debian mirror the host's apt uses for bookworm (deb822 or one-line format)."""
    if DEBIAN_SOURCES.exists():
        for stanza in re.split(r"\n\s*\n", DEBIAN_SOURCES.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and DEBIAN_SUITE in fields.get("suites", "").split()
            ):
                return fields["uris"].split()[0]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == DEBIAN_SUITE:
                return words[1]
    return "http://deb.debian.org/debian"


def ensure_base_image(podman: Podman, debootstrap: str, workdir: Path) -> None:
    """Make the debootstrapped base image unless it exists (it is kept between runs)."""
    if podman.ok("image", "exists", BASE_IMAGE):
        log(f"base image {BASE_IMAGE}: present, kept")
        return
    start = time.monotonic()
    mirror = debian_mirror()
    rootfs = workdir / "rootfs"
    log(f"base image {BASE_IMAGE}: debootstrap {DEBIAN_SUITE} from {mirror} (about a minute)")
    run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            DEBIAN_SUITE,
            str(rootfs),
            mirror,
        ],
        timeout=600,
    )
    # pip in the build must trust the same certificate chain as the host.
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / cache).glob("*"):
            if path.is_file():
                path.unlink()
    tar_argv = [shutil.which("tar") or "/usr/bin/tar", "-C", str(rootfs), "-c", "."]
    with subprocess.Popen(tar_argv, stdout=subprocess.PIPE) as tar:
        podman("import", "-", BASE_IMAGE, stdin=tar.stdout, timeout=300)
    assert tar.returncode == 0, "tar of the debootstrapped root failed"
    shutil.rmtree(rootfs)
    log(f"base image {BASE_IMAGE}: made in {elapsed(start)}")


def build_image(podman: Podman, workdir: Path) -> str:
    """Build the Dockerfile on the base image; return the image id."""
    previous = podman("images", "--quiet", "--no-trunc", IMAGE).strip()
    iidfile = workdir / "iid"
    start = time.monotonic()
    podman(
        "build",
        "--network",
        "host",
        "--pull=never",
        "--format",
        "docker",  # HEALTHCHECK is a Docker-format field; OCI images drop it
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--iidfile",
        str(iidfile),
        "--tag",
        IMAGE,
        "--file",
        str(REPO / "Dockerfile"),
        str(REPO),
        timeout=600,
    )
    image = iidfile.read_text().strip()
    log(f"image built in {elapsed(start)}: {image[:19]}")
    if previous and previous != image:
        # The image it replaces (its layers are not shared), unless a container uses it.
        podman.ok("rmi", previous)
    return image


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    tools = require_tools()
    workdir = tmp_path_factory.mktemp("podman")
    podman = Podman(tools["podman"], workdir / "containers.conf")
    podman.remove_leftovers()
    return podman


@pytest.fixture(scope="module")
def image(podman: Podman, tmp_path_factory: pytest.TempPathFactory) -> str:
    workdir = tmp_path_factory.mktemp("image")
    start = time.monotonic()
    ensure_base_image(podman, require_tools()["debootstrap"], workdir)
    image = build_image(podman, workdir)
    log(f"base and image ready in {elapsed(start)}")
    return image


class ThreadedTarget:
    """The reference target on 127.0.0.1, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="reference-target", daemon=True)
        self.target: RunningTarget | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def start(self) -> RunningTarget:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(
            start_reference_target(TargetBehaviour(), host="127.0.0.1"), self.loop
        )
        self.target = started.result(scaled(10))
        return self.target

    def stop(self) -> None:
        if self.target is not None:
            asyncio.run_coroutine_threadsafe(self.target.close(), self.loop).result(scaled(10))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(scaled(10))


@pytest.fixture(scope="module")
def reference_target() -> Iterator[RunningTarget]:
    served = ThreadedTarget()
    try:
        yield served.start()
    finally:
        served.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def daemon_config(listen: str, target_url: str) -> dict[str, Any]:
    """One small scenario every second against the reference target, thresholds it meets."""
    return {
        "server": {"listen": listen},
        "targets": [
            {
                "name": "reference",
                "url": target_url,
                "welcome": {"match": r'"type":\s*"welcome"', "timeout": "2s"},
                "echo": {
                    "payload": '{"type":"ping","seq":{seq}}',
                    "match": r'"seq":\s*{seq}',
                    "timeout": "2s",
                },
            }
        ],
        "scenarios": [
            {
                "name": "container",
                "schedule": {"every": "1s"},
                "spike": {"connections": 20, "batches": 2, "batch_interval": "200ms"},
                "stable": {"connections": 3, "ping_interval": "200ms"},
                "baseline": {"probes": 3, "interval": "100ms"},
                "recovery": {
                    "probe_interval": "100ms",
                    "consecutive": 3,
                    "tolerance": 0.5,
                    "slack": "20ms",
                    "timeout": "10s",
                },
                "thresholds": {"success_ratio": 0.95, "dropped_stable": 0},
            }
        ],
    }


class Daemon:
    """``spikewatch run`` in a container: read-only root, tmpfs /tmp, no capabilities."""

    def __init__(self, podman: Podman, image: str, config: Path, port: int) -> None:
        self.podman = podman
        self.image = image
        self.config = config
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.name = f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def start(self) -> Daemon:
        start = time.monotonic()
        self.podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",  # noqa: S108 (the container's /tmp, in memory)
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            f"{self.config}:{CONFIG_IN_CONTAINER}:ro",
            "--env",
            f"SPIKEWATCH_HEALTHCHECK_URL={self.base}/healthz",
            self.image,
        )
        self.wait_for(lambda: self.get("/readyz")[0] == 200, "ready", timeout=30)
        log(f"{self.name} ready in {elapsed(start)}")
        return self

    def remove(self) -> None:
        self.podman.ok("rm", "--force", "--time", "0", self.name)

    def logs(self) -> str:
        done = subprocess.run(
            [*self.podman.argv, "logs", self.name],
            capture_output=True,
            text=True,
            env=self.podman.env,
            timeout=scaled(30),
            check=False,
        )
        return (done.stdout + done.stderr)[-TAIL:]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.podman.inspect("container", self.name)["State"]
        return state

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of the daemon's HTTP server; status 0 when nothing answers."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.base + path, timeout=scaled(5)) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def wait_for(self, condition: Callable[[], bool], what: str, *, timeout: float) -> None:
        """Poll ``condition`` (no event crosses into the container); fail if it exits."""
        deadline = time.monotonic() + scaled(timeout)
        while not condition():
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited before {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: not {what} within {timeout}s:\n{self.logs()}")
            time.sleep(0.2)

    def runs(self) -> list[dict[str, Any]]:
        status, body = self.get("/api/v1/runs")
        assert status == 200, body
        runs: list[dict[str, Any]] = json.loads(body)["runs"]
        return runs

    def exec(self, *argv: str) -> str:
        return self.podman("exec", self.name, *argv)


@pytest.fixture(scope="module")
def daemon_factory(
    podman: Podman,
    image: str,
    reference_target: RunningTarget,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], Daemon]]:
    started: list[Daemon] = []

    def start() -> Daemon:
        port = free_port()
        config = tmp_path_factory.mktemp("config") / "spikewatch.yaml"
        config.write_text(yaml.safe_dump(daemon_config(f"127.0.0.1:{port}", reference_target.url)))
        config.chmod(0o644)  # read by UID 10001 in the container
        daemon = Daemon(podman, image, config, port)
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in started:
            daemon.remove()


@pytest.fixture(scope="module")
def daemon(daemon_factory: Callable[[], Daemon]) -> Daemon:
    return daemon_factory()


def locked_versions() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", LOCK.read_text(), flags=re.MULTILINE)
    return {normalize(name): version for name, version in pins}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_image_config(podman: Podman, image: str) -> None:
    """Non-root fixed UID, exec-form entrypoint, exec-form health check on /healthz."""
    config = podman.inspect("image", image)
    log(f"image size {config['Size'] / 1e6:.0f} MB (base {BASE_IMAGE} included)")
    assert config["Config"]["User"] == f"{UID}:{UID}"
    assert config["Config"]["Entrypoint"] == ["/opt/spikewatch/bin/spikewatch"]
    assert config["Config"]["Cmd"] == ["run", "--config", CONFIG_IN_CONTAINER]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Config"]["Env"]
    health = config["Healthcheck"]
    assert health is not None, "HEALTHCHECK missing (built without --format docker?)"
    assert health["Test"][0] == "CMD", health  # exec form, no shell
    assert "/healthz" in " ".join(health["Test"])
    assert health["Interval"] > 0
    assert health["Timeout"] > 0


def test_image_holds_the_locked_dependencies_and_no_installer(podman: Podman, image: str) -> None:
    """The venv holds exactly the lock's pins and spikewatch: no pip or setuptools; no compiler."""
    script = (
        "import importlib.metadata as m, json, shutil\n"
        "print(json.dumps({'dists': {d.metadata['Name']: d.version for d in m.distributions()},"
        " 'tools': [t for t in ('gcc', 'cc', 'make') if shutil.which(t)]"
        " + [t for t in ('pip', 'pip3') if shutil.which(t, path='/opt/spikewatch/bin')]}))"
    )
    found = json.loads(
        podman(
            "run",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--entrypoint",
            "/opt/spikewatch/bin/python",
            image,
            "-c",
            script,
        )
    )
    installed = {normalize(name): version for name, version in found["dists"].items()}
    assert installed.pop("spikewatch")
    assert installed == locked_versions()
    assert found["tools"] == []


def test_serves_health_and_metrics(daemon: Daemon) -> None:
    status, body = daemon.get("/healthz")
    assert status == 200, body
    status, body = daemon.get("/metrics")
    assert status == 200
    assert re.search(rb'^spikewatch_build_info\{version="[^"]+"\} 1\.0$', body, re.MULTILINE)


def test_runs_as_pid_1_with_the_fixed_uid_on_a_read_only_root(daemon: Daemon) -> None:
    assert daemon.exec("id", "-u").strip() == str(UID)
    status = daemon.exec("cat", "/proc/1/status")
    assert re.search(rf"^Uid:\s+{UID}\s+{UID}\s+{UID}\s+{UID}$", status, re.MULTILINE), status
    cmdline = daemon.exec("cat", "/proc/1/cmdline").split("\0")
    # PID 1 is the daemon itself (exec-form ENTRYPOINT: no shell, no init in between).
    assert cmdline[:3] == ["/opt/spikewatch/bin/python3", "/opt/spikewatch/bin/spikewatch", "run"]
    with pytest.raises(AssertionError, match="Read-only file system"):
        daemon.exec("touch", "/opt/spikewatch/written")


def test_healthcheck_passes_and_fails_when_nothing_answers(
    podman: Podman, image: str, daemon: Daemon
) -> None:
    assert podman.ok("healthcheck", "run", daemon.name), daemon.logs()
    # The same command pointed at a port where nothing listens must fail.
    command = podman.inspect("image", image)["Healthcheck"]["Test"][1:]
    nowhere = f"SPIKEWATCH_HEALTHCHECK_URL=http://127.0.0.1:{free_port()}/healthz"
    assert not podman.ok("exec", "--env", nowhere, daemon.name, *command)


def test_a_real_run_passes(daemon: Daemon) -> None:
    """The scheduled scenario runs against the reference target on the host and passes."""
    start = time.monotonic()
    daemon.wait_for(
        lambda: any(run["state"] == "done" for run in daemon.runs()), "done with a run", timeout=60
    )
    done = [run for run in daemon.runs() if run["state"] == "done"]
    log(f"first run done {elapsed(start)} after ready: {done[-1]['result']}")
    assert done[-1]["result"] == "passed", json.dumps(done[-1], indent=1)
    assert done[-1]["spike"]["outcomes"] == {"ok": 20}
    _, body = daemon.get("/metrics")
    assert re.search(
        rb'^spikewatch_runs_total\{result="passed",scenario="container",target="reference"\} '
        rb"[1-9]",
        body,
        re.MULTILINE,
    )


def test_sigterm_stops_it_gracefully_within_10_s(daemon_factory: Callable[[], Daemon]) -> None:
    """``podman stop`` sends SIGTERM to PID 1; the daemon exits 0 before the 10 s SIGKILL."""
    daemon = daemon_factory()
    # Stop it in the middle of a run, with spike and stable connections open.
    daemon.wait_for(
        lambda: any(run["state"] == "running" for run in daemon.runs()), "running", timeout=30
    )
    start = time.monotonic()
    daemon.podman("stop", "--time", "10", daemon.name, timeout=30)
    took = time.monotonic() - start
    state = daemon.state()
    log(f"stopped by SIGTERM in {took:.1f}s, exit code {state['ExitCode']}")
    logs = daemon.logs()
    assert state["ExitCode"] == 0, logs
    assert took < 10, logs
    assert "SIGTERM: shutting down" in logs
    assert "spikewatch stopped" in logs
