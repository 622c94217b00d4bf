"""The entry point's early SIGTERM handler (the real signal in a real process: test_daemon)."""

from __future__ import annotations

import signal

import pytest

from spikewatch import _entry


@pytest.mark.parametrize(("command", "status"), [("run", 0), ("once", 1)])
def test_a_sigterm_whose_exception_was_dropped_still_stops(
    command: str, status: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM seen during the imports stops the command even if its exception was lost."""
    # As CPython leaves it after a handler's exception is dropped inside compile().
    monkeypatch.setattr(_entry, "_received", [signal.SIGTERM])
    monkeypatch.setattr("sys.argv", ["spikewatch", command])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert _entry.main() == status
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err == "spikewatch: terminated\n"
