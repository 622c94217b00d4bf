"""Real servers nobody here wrote, run as processes on loopback, each with its own account.

Every server prints what it saw, one line per event, from the server's own events or log:
the Node and Ruby scripts here print JSON lines (``{"event": "open"}``), mosquitto, nginx
and HAProxy their log lines. :class:`PeerServer` reads those lines as they come; a test
waits for the account it expects (:meth:`PeerServer.until`) and compares it with
spikewatch's figures. Nothing here is installed on the fly: a missing program fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import scaled

#: This directory: the server scripts, their configs, package.json and node_modules.
PEERS = Path(__file__).resolve().parent

#: How long a server may take to say it is listening.
START_TIMEOUT = 20.0

#: The JSON scripts' first line: ``{"event": "listening", "port": N}``.
LISTENING = "listening"

#: How many sets of ports a server that cannot listen on port 0 is started on before
#: :func:`on_free_ports` gives up.
PORT_ATTEMPTS = 5

#: What mosquitto, nginx and HAProxy print when a port they were given is taken.
ADDRESS_IN_USE = re.compile(r"[Aa]ddress already in use|[Cc]annot bind|could not bind")

Peer = TypeVar("Peer", bound="PeerServer")


def program(name: str) -> str:
    """Return the path of ``name``; fail (never skip) when it is not installed."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert found is not None, f"{name} is not installed (tests/run.sh installs it)"
    return found


def node_script(name: str) -> list[str]:
    """Return the command running ``tests/peers/<name>`` with node; its packages installed."""
    assert (PEERS / "node_modules").is_dir(), "run npm ci in tests/peers (tests/run.sh does)"
    return [program("node"), str(PEERS / name)]


def free_port() -> int:
    """Return a loopback port free now (for servers that cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def held_elsewhere(port: int) -> bool:
    """Return whether some process listens on (or holds) loopback ``port`` now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
        return False


def on_free_ports(
    name: str,
    count: int,
    start: Callable[[list[int]], Peer],
    pick: Callable[[], int] = free_port,
    attempts: int = PORT_ATTEMPTS,
) -> Peer:
    """Start a server that takes its ports as configuration: ``start(ports)`` with ``count``
    ports from ``pick``. Another process may take a port between the pick and the server's
    bind; when the start fails so (its log says the address is in use, or a port is held by
    someone else now), start again on new ports, ``attempts`` times at most."""
    taken: list[int] = []
    for _ in range(attempts):
        ports = [pick() for _ in range(count)]
        try:
            return start(ports)
        except AssertionError as failure:
            held = [port for port in ports if held_elsewhere(port)]
            if not held and ADDRESS_IN_USE.search(str(failure)) is None:
                raise
            taken.extend(held or ports)
    raise AssertionError(
        f"{name} could not listen: {attempts} starts, each on a port another process took "
        f"first ({', '.join(map(str, taken))})"
    )


def fill(template: str, directory: Path, **values: object) -> Path:
    """Write ``tests/peers/<template>`` into ``directory`` with each ``@NAME@`` filled in."""
    text = (PEERS / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    left = re.search(r"@[A-Z_]+@", text)
    assert left is None, f"{template}: {left and left.group()} is not filled in"
    path = directory / template
    path.write_text(text)
    return path


class PeerServer:
    """A server process; ``lines`` is everything it printed so far, in order."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.lines: list[str] = []
        #: True once the process closed its output (it exited): no more lines will come.
        self.ended = False
        self._changed = threading.Condition()
        self._process = subprocess.Popen(
            argv,
            cwd=PEERS,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"peer-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Collect the process's lines until it exits."""
        assert self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until ``done()`` holds, woken by each new line; fail after ``timeout``."""
        with self._changed:
            ok = self._changed.wait_for(lambda: done() or self.ended, scaled(timeout))
            held = done()
        tail = "\n".join(self.lines[-20:])
        assert ok, f"{self.name}: no {what} within {timeout}s; its last lines:\n{tail}"
        assert held, f"{self.name} exited ({self._process.poll()}) before {what}:\n{tail}"

    async def until(self, done: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Wait (off the event loop) until the server's account satisfies ``done()``."""
        await asyncio.to_thread(self.wait, done, timeout, what)

    def mark(self) -> int:
        """Return where the account stands now: later counts start from here."""
        return len(self.lines)

    def wait_exit(self) -> int:
        """Block until the process exits; return its exit status."""
        return self._process.wait()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and its reader."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(scaled(10))
        if self._process.stdout is not None:
            self._process.stdout.close()


class JsonPeer(PeerServer):
    """A server script here that prints JSON event lines, the first its port."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        super().__init__(name, argv, env=env)
        try:
            self.wait(lambda: bool(self.events(LISTENING)), START_TIMEOUT, "listening line")
        except AssertionError:
            self.stop()
            raise
        self.port: int = self.events(LISTENING)[0]["port"]

    def tally(self, kind: str, since: int = 0) -> int:
        """Return how many ``kind`` events the server printed since ``since``."""
        return self.count(kind, since)

    def events(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Return the events printed since ``since`` (those of ``kind`` only, when given)."""
        found = []
        for line in list(self.lines)[since:]:
            if line.startswith("{"):
                event = json.loads(line)
                if kind is None or event["event"] == kind:
                    found.append(event)
        return found

    def count(self, kind: str, since: int = 0) -> int:
        """Return how many ``kind`` events the server printed since ``since``."""
        return len(self.events(kind, since))

    def values(self, kind: str, key: str, since: int = 0) -> list[Any]:
        """Return ``key`` of each ``kind`` event since ``since``, in order."""
        return [event[key] for event in self.events(kind, since)]


class LogPeer(PeerServer):
    """A server whose account is its log, on ``port``: ready when a line matches ``ready``
    (when given; else the caller waits for it)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, argv, env=env)
        self.port = port
        if ready is not None:
            try:
                self.wait(lambda: bool(self.matching(ready)), START_TIMEOUT, f"line {ready!r}")
            except AssertionError:
                self.stop()
                raise

    def tally(self, pattern: str, since: int = 0) -> int:
        """Return how many log lines since ``since`` match ``pattern``."""
        return len(self.matching(pattern, since))

    def matching(self, pattern: str, since: int = 0) -> list[re.Match[str]]:
        """Return the matches of ``pattern`` (re.search) in the log since ``since``."""
        found = (re.search(pattern, line) for line in list(self.lines)[since:])
        return [m for m in found if m is not None]


@contextmanager
def running(server: Peer) -> Iterator[Peer]:
    """Stop ``server`` when the block ends."""
    try:
        yield server
    finally:
        server.stop()


def python_echo() -> JsonPeer:
    """Python ``websockets`` echo (tests/peers/echo_websockets.py)."""
    return JsonPeer("websockets echo", [sys.executable, str(PEERS / "echo_websockets.py")])


def node_echo() -> JsonPeer:
    """Node ``ws`` echo (tests/peers/echo_ws.js)."""
    return JsonPeer("ws echo", node_script("echo_ws.js"))


def socketio(ping_interval_ms: int | None = None, ping_timeout_ms: int | None = None) -> JsonPeer:
    """Socket.IO 4 (tests/peers/socketio.js); its own ping defaults unless given."""
    env = {}
    if ping_interval_ms is not None:
        env["PING_INTERVAL_MS"] = str(ping_interval_ms)
    if ping_timeout_ms is not None:
        env["PING_TIMEOUT_MS"] = str(ping_timeout_ms)
    return JsonPeer("socket.io", node_script("socketio.js"), env=env)


def graphql_ws() -> JsonPeer:
    """graphql-ws 6 on ws (tests/peers/graphql_ws.js)."""
    return JsonPeer("graphql-ws", node_script("graphql_ws.js"))


def actioncable() -> JsonPeer:
    """Action Cable under puma (tests/peers/actioncable.rb)."""
    return JsonPeer("action cable", [program("ruby"), str(PEERS / "actioncable.rb")])


def mosquitto(directory: Path, pick: Callable[[], int] = free_port) -> LogPeer:
    """mosquitto with a websockets listener (tests/peers/mosquitto.conf), on ports from
    ``pick`` (another pick when one is taken)."""

    def start(ports: list[int]) -> LogPeer:
        port, mqtt_port = ports
        config = fill("mosquitto.conf", directory, PORT=port, MQTT_PORT=mqtt_port)
        # mosquitto writes its log with stdio and does not flush a pipe: stdbuf makes it by line.
        argv = [program("stdbuf"), "-oL", program("mosquitto"), "-c", str(config)]
        return LogPeer("mosquitto", argv, port, r"mosquitto version \S+ running")

    return on_free_ports("mosquitto", 2, start, pick)


def nginx(directory: Path, upstream: int, pick: Callable[[], int] = free_port) -> LogPeer:
    """nginx proxying to ``upstream`` with proxy_read_timeout 3s (tests/peers/nginx.conf),
    on a port from ``pick`` (another pick when it is taken)."""

    def start(ports: list[int]) -> LogPeer:
        [port] = ports
        config = fill("nginx.conf", directory, PORT=port, UPSTREAM=upstream, DIR=directory)
        argv = [program("nginx"), "-p", str(directory), "-c", str(config)]
        return LogPeer("nginx", argv, port, r"start worker process")

    return on_free_ports("nginx", 1, start, pick)


def haproxy(
    directory: Path, upstream: int, queue: str, pick: Callable[[], int] = free_port
) -> LogPeer:
    """HAProxy with ``maxconn 4`` on its one server, queueing up to ``queue``, on a port from
    ``pick`` (another pick when it is taken)."""

    def start(ports: list[int]) -> LogPeer:
        [port] = ports
        config = fill("haproxy.cfg", directory, PORT=port, UPSTREAM=upstream, QUEUE=queue)
        # HAProxy prints nothing once it listens; in master-worker mode (-Ws) it tells
        # systemd's notify socket READY=1 then, so a socket here stands in for systemd and
        # relays it. When HAProxy exits first (a port taken), a thread says so on the socket.
        notify = directory / "notify.sock"
        notify.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(notify))
            listener.settimeout(scaled(START_TIMEOUT))
            argv = [program("haproxy"), "-Ws", "-f", str(config)]
            server = LogPeer("haproxy", argv, port, env={"NOTIFY_SOCKET": str(notify)})
            threading.Thread(
                target=_say_exit, args=(server, notify), name="haproxy-exit", daemon=True
            ).start()
            try:
                while (said := listener.recv(4096)) != EXITED and b"READY=1" not in said:
                    pass
            except TimeoutError as timeout:
                server.stop()
                message = f"haproxy: no READY=1 within {START_TIMEOUT}s"
                raise AssertionError(message) from timeout
        if said == EXITED:
            server.stop()
            tail = "\n".join(server.lines[-20:])
            raise AssertionError(f"haproxy exited before it was ready:\n{tail}")
        return server

    return on_free_ports("haproxy", 1, start, pick)


#: What :func:`_say_exit` sends on HAProxy's notify socket.
EXITED = b"EXITED"


def _say_exit(server: PeerServer, notify: Path) -> None:
    """Once ``server`` exits, send :data:`EXITED` to the datagram socket at ``notify``."""
    server.wait_exit()
    # Once the start is over nobody listens there any more: nothing to tell.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender, contextlib.suppress(OSError):
        sender.sendto(EXITED, str(notify))
