"""The pool of random bytes behind keys and masks."""

from __future__ import annotations

import os

import pytest

from spikewatch.protocol import entropy


def test_bytes_are_never_handed_out_twice_across_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consecutive takes are consecutive slices of the OS's bytes; a refill starts afresh."""
    reads: list[bytes] = []

    def urandom(n: int) -> bytes:
        chunk = bytes((len(reads) * 7 + i) % 256 for i in range(n))
        reads.append(chunk)
        return chunk

    monkeypatch.setattr(os, "urandom", urandom)
    pool = entropy._Pool()
    taken = [pool.take(4) for _ in range(entropy.POOL_BYTES // 4 + 1)]
    assert len(reads) == 2
    assert b"".join(taken[:-1]) == reads[0]
    assert taken[-1] == reads[1][:4]


def test_a_request_larger_than_the_pool_is_served_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for more than a refill's worth gets all of it from one read."""
    monkeypatch.setattr(os, "urandom", lambda n: b"\x01" * n)
    pool = entropy._Pool()
    assert pool.take(entropy.POOL_BYTES * 2) == b"\x01" * (entropy.POOL_BYTES * 2)


def test_a_forked_child_does_not_reuse_its_parents_bytes() -> None:
    """After fork the child draws fresh bytes instead of the parent's pool."""
    entropy.random_bytes(4)  # the pool holds bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, entropy.random_bytes(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != entropy.random_bytes(16)
