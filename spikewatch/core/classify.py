"""Classify why a connection attempt failed into one outcome of the contract."""

from __future__ import annotations

import errno
import socket
import ssl

from spikewatch.core.outcomes import Outcome

#: Why no socket could be made: the prober's own limits, never the target's doing.
_FD_EXHAUSTED = {
    errno.EMFILE: "too many open files (EMFILE): the prober reached its file descriptor "
    "limit (RLIMIT_NOFILE, ulimit -n); raise it or spread the spike over more batches",
    errno.ENFILE: "too many open files in the system (ENFILE): the host's file table is "
    "full; the prober cannot open sockets",
}
_NO_ROUTE = frozenset((errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN))


def _ssl_text(exc: ssl.SSLError, field: str) -> str:
    # reason and verify_message exist only on errors raised by the _ssl C module; an
    # SSLError built in Python prints as its args tuple, so use its message instead.
    value = getattr(exc, field, None)
    if value:
        return str(value)
    if len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def classify_connect_error(exc: BaseException, *, tls: bool) -> tuple[Outcome, str]:
    """Map an exception from the TCP connect or TLS handshake to (outcome, detail).

    ``tls`` says whether a TLS handshake was part of the connect, so that a reset
    while it ran is reported as the TLS failure it most likely is.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = _ssl_text(exc, "verify_message")
        return Outcome.TLS_ERROR, f"certificate verification failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        return Outcome.TLS_ERROR, f"TLS handshake failed: {_ssl_text(exc, 'reason')}"
    if isinstance(exc, socket.gaierror):
        return Outcome.DNS_ERROR, f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return Outcome.REFUSED, "connection refused"
    if isinstance(exc, ConnectionError):
        if tls:
            return Outcome.TLS_ERROR, f"connection lost during the TLS handshake: {exc}"
        return Outcome.CLOSED, f"connection lost while connecting: {exc}"
    if isinstance(exc, TimeoutError):
        return Outcome.TIMEOUT, "connect timed out"
    if isinstance(exc, OSError):
        if exc.errno in _FD_EXHAUSTED:
            return Outcome.ERROR, _FD_EXHAUSTED[exc.errno]
        if exc.errno in _NO_ROUTE:
            return Outcome.ERROR, f"no route to the target: {exc}"
        if exc.errno == errno.EADDRNOTAVAIL:
            return Outcome.ERROR, f"no local address or port available: {exc}"
        return Outcome.ERROR, f"{type(exc).__name__}: {exc}"
    return Outcome.ERROR, f"{type(exc).__name__}: {exc}"


#: How the detail of an attempt refused for want of receive buffer begins (the shared
#: budget of ``protocol/receive_budget.py``): the prober's own limit, never the target's.
RECEIVE_BUFFERS_FULL = "the prober's receive buffers are full"


def out_of_receive_buffer(outcome: Outcome | None, detail: str) -> bool:
    """Whether an attempt failed because the prober's receive budget was spent."""
    return outcome == Outcome.ERROR and detail.startswith(RECEIVE_BUFFERS_FULL)


def lost_to_prober(reason: str | None) -> bool:
    """Whether a held connection was lost to the prober's receive budget, not the target.

    The exchange keeps the budget's detail as such a loss's reason; every loss the target
    causes has a reason of its own (``the peer closed ...``, ``protocol error: ...``).
    """
    return reason is not None and reason.startswith(RECEIVE_BUFFERS_FULL)


def out_of_descriptors(outcome: Outcome | None, detail: str) -> bool:
    """Whether an attempt failed for want of a file descriptor: the prober's fault."""
    return outcome == Outcome.ERROR and detail in _FD_EXHAUSTED.values()


def descriptor_error(exc: OSError) -> str | None:
    """Return the explanation when ``exc`` is EMFILE or ENFILE, else None."""
    return _FD_EXHAUSTED.get(exc.errno) if exc.errno is not None else None
