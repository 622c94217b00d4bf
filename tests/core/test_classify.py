"""Tests for spikewatch.core.classify."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from spikewatch.core.classify import (
    classify_connect_error,
    descriptor_error,
    lost_to_prober,
    out_of_descriptors,
)
from spikewatch.core.outcomes import Outcome
from spikewatch.protocol.receive_budget import explain


def test_certificate_verification_failure_is_tls_error() -> None:
    """A rejected server certificate is a tls_error naming the verification message."""
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    outcome, detail = classify_connect_error(exc, tls=True)
    assert outcome is Outcome.TLS_ERROR
    assert detail == "certificate verification failed: self-signed certificate"


def test_certificate_error_built_without_openssl_fields_is_tls_error() -> None:
    """A verification error raised without OpenSSL's verify_message still classifies."""
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    outcome, detail = classify_connect_error(exc, tls=True)
    assert outcome is Outcome.TLS_ERROR
    assert detail.startswith("certificate verification failed: ")


def test_ssl_error_with_reason_shows_the_reason() -> None:
    """Another TLS failure is a tls_error that names OpenSSL's reason."""
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    exc.reason = "WRONG_VERSION_NUMBER"
    assert classify_connect_error(exc, tls=True) == (
        Outcome.TLS_ERROR,
        "TLS handshake failed: WRONG_VERSION_NUMBER",
    )


def test_ssl_error_with_empty_reason_shows_the_exception() -> None:
    """A TLS failure whose reason OpenSSL left empty falls back to the exception's text."""
    exc = ssl.SSLError(1, "EOF occurred in violation of protocol")
    exc.reason = None  # type: ignore[assignment]  # typeshed says str; OpenSSL may leave it None
    outcome, detail = classify_connect_error(exc, tls=True)
    assert outcome is Outcome.TLS_ERROR
    assert detail.startswith("TLS handshake failed: ")
    assert "EOF occurred in violation of protocol" in detail


def test_ssl_error_without_reason_shows_the_exception() -> None:
    """An SSLError raised from Python (no OpenSSL reason) falls back to its text."""
    exc = ssl.SSLError("handshake went wrong")
    outcome, detail = classify_connect_error(exc, tls=True)
    assert outcome is Outcome.TLS_ERROR
    assert detail == "TLS handshake failed: handshake went wrong"


def test_name_resolution_failure_is_dns_error() -> None:
    """A getaddrinfo failure is a dns_error with the resolver's message."""
    exc = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert classify_connect_error(exc, tls=False) == (
        Outcome.DNS_ERROR,
        "name resolution failed: Name or service not known",
    )


def test_name_resolution_failure_without_strerror_shows_the_exception() -> None:
    """A gaierror without strerror still says what failed."""
    outcome, detail = classify_connect_error(socket.gaierror("no such host"), tls=False)
    assert outcome is Outcome.DNS_ERROR
    assert detail == "name resolution failed: no such host"


@pytest.mark.parametrize("tls", [True, False])
def test_refused_connection_is_refused(tls: bool) -> None:
    """A refused TCP connect is ``refused`` whether or not TLS was to follow."""
    exc = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert classify_connect_error(exc, tls=tls) == (Outcome.REFUSED, "connection refused")


def test_reset_during_tls_handshake_is_tls_error() -> None:
    """A reset while a TLS handshake ran is reported as the TLS failure it most likely is."""
    exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    outcome, detail = classify_connect_error(exc, tls=True)
    assert outcome is Outcome.TLS_ERROR
    assert detail.startswith("connection lost during the TLS handshake: ")
    assert "Connection reset by peer" in detail


def test_reset_without_tls_is_closed() -> None:
    """A reset on a plain connect is ``closed``."""
    exc = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    outcome, detail = classify_connect_error(exc, tls=False)
    assert outcome is Outcome.CLOSED
    assert detail.startswith("connection lost while connecting: ")
    assert "Connection reset by peer" in detail


@pytest.mark.parametrize("tls", [True, False])
def test_timeout_is_timeout(tls: bool) -> None:
    """A connect that timed out is ``timeout``."""
    assert classify_connect_error(TimeoutError(), tls=tls) == (
        Outcome.TIMEOUT,
        "connect timed out",
    )


@pytest.mark.parametrize(
    ("code", "name", "cause"),
    [
        (errno.EMFILE, "EMFILE", "the prober reached its file descriptor limit (RLIMIT_NOFILE"),
        (errno.ENFILE, "ENFILE", "the host's file table is full"),
    ],
)
def test_descriptor_exhaustion_blames_the_prober(code: int, name: str, cause: str) -> None:
    """Running out of file descriptors is an error that names the errno and the limit."""
    exc = OSError(code, "Too many open files")
    outcome, detail = classify_connect_error(exc, tls=False)
    assert outcome is Outcome.ERROR
    assert detail.startswith("too many open files")
    assert f"({name})" in detail
    assert cause in detail


@pytest.mark.parametrize("code", [errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN])
def test_unreachable_network_says_no_route(code: int) -> None:
    """An unreachable network or host is an error that says there is no route."""
    exc = OSError(code, "Network is unreachable")
    outcome, detail = classify_connect_error(exc, tls=False)
    assert outcome is Outcome.ERROR
    assert detail.startswith("no route to the target: ")


def test_no_local_port_says_so() -> None:
    """EADDRNOTAVAIL (ephemeral ports used up) is an error naming the local side."""
    exc = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
    outcome, detail = classify_connect_error(exc, tls=False)
    assert outcome is Outcome.ERROR
    assert detail.startswith("no local address or port available: ")
    assert "Cannot assign requested address" in detail


def test_other_os_error_names_its_type() -> None:
    """Any other OSError is an error with its type and message."""
    exc = PermissionError(errno.EACCES, "Permission denied")
    assert classify_connect_error(exc, tls=False) == (
        Outcome.ERROR,
        "PermissionError: [Errno 13] Permission denied",
    )


def test_os_error_without_errno_names_its_type() -> None:
    """An OSError without an errno is still classified as an error, not a crash."""
    outcome, detail = classify_connect_error(OSError("odd"), tls=False)
    assert outcome is Outcome.ERROR
    assert detail == "OSError: odd"


def test_unknown_exception_names_its_type() -> None:
    """Anything that is not an OSError is an error with its type and message."""
    assert classify_connect_error(ValueError("bad value"), tls=True) == (
        Outcome.ERROR,
        "ValueError: bad value",
    )


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_a_descriptor_failure_is_recognised_as_the_probers(code: int) -> None:
    """The detail classify gives EMFILE/ENFILE marks the attempt as the prober's fault."""
    outcome, detail = classify_connect_error(OSError(code, "no"), tls=False)
    assert out_of_descriptors(outcome, detail)
    assert descriptor_error(OSError(code, "no")) == detail


def test_other_failures_are_not_the_probers() -> None:
    """Refused, other errors and errno-less errors are not descriptor exhaustion."""
    outcome, detail = classify_connect_error(ConnectionRefusedError(), tls=False)
    assert not out_of_descriptors(outcome, detail)
    assert not out_of_descriptors(Outcome.ERROR, "something else")
    assert descriptor_error(OSError(errno.EPIPE, "pipe")) is None
    assert descriptor_error(OSError("no errno")) is None


def test_a_loss_to_the_receive_budget_is_told_from_the_targets() -> None:
    """The budget's detail as a held connection's reason is the prober's; others are not."""
    assert lost_to_prober(explain(65536))
    assert not lost_to_prober(f"protocol error: {explain(65536)}")
    assert not lost_to_prober("the peer closed with code 1001")
    assert not lost_to_prober(None)
