"""The start of the servers that take their port as configuration: a port another process
took between the pick and the server's bind makes another pick, a bounded number of times."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers import servers


@pytest.fixture
def held() -> Iterator[int]:
    """A loopback port that a socket of this test listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def held_first(port: int) -> Callable[[], int]:
    """A port picker whose first pick is ``port``, then free ones."""
    picks = iter([port])
    return lambda: next(picks, None) or servers.free_port()


def answers(port: int) -> bool:
    """Return whether a TCP connection to loopback ``port`` is accepted."""
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True


@pytest.fixture
def upstream() -> Iterator[servers.JsonPeer]:
    """The echo service the proxies forward to."""
    with servers.running(servers.python_echo()) as server:
        yield server


def test_mosquitto_starts_on_other_ports_when_its_first_is_taken(tmp_path: Path, held: int) -> None:
    """mosquitto given a port another socket listens on starts again on free ones."""
    with servers.running(servers.mosquitto(tmp_path, held_first(held))) as broker:
        assert broker.port != held
        assert answers(broker.port)
        assert servers.held_elsewhere(held)


def test_nginx_starts_on_another_port_when_its_first_is_taken(
    tmp_path: Path, held: int, upstream: servers.JsonPeer
) -> None:
    """nginx given a port another socket listens on starts again on a free one."""
    with servers.running(servers.nginx(tmp_path, upstream.port, held_first(held))) as proxy:
        assert proxy.port != held
        assert answers(proxy.port)


def test_haproxy_starts_on_another_port_when_its_first_is_taken(
    tmp_path: Path, held: int, upstream: servers.JsonPeer
) -> None:
    """HAProxy given a port another socket listens on starts again on a free one."""
    start = servers.haproxy(tmp_path, upstream.port, "1s", held_first(held))
    with servers.running(start) as proxy:
        assert proxy.port != held
        assert answers(proxy.port)


def test_a_port_taken_at_every_start_fails_naming_the_server_and_the_port(
    tmp_path: Path, held: int, upstream: servers.JsonPeer
) -> None:
    """Given only a taken port, HAProxy's start stops after PORT_ATTEMPTS tries, saying why."""
    attempts = servers.PORT_ATTEMPTS
    expected = (
        rf"haproxy could not listen: {attempts} starts, .*\({', '.join([str(held)] * attempts)}\)"
    )
    with pytest.raises(AssertionError, match=expected):
        servers.haproxy(tmp_path, upstream.port, "1s", lambda: held)


def test_a_start_that_fails_otherwise_is_not_tried_again() -> None:
    """A failure that is not a taken port (no such log line, no port held) is raised at once."""
    starts: list[list[int]] = []

    def start(ports: list[int]) -> servers.LogPeer:
        starts.append(ports)
        raise AssertionError("bad configuration")

    with pytest.raises(AssertionError, match="bad configuration"):
        servers.on_free_ports("broken", 1, start)
    assert len(starts) == 1
