"""The ``spikewatch`` command's entry point: catch SIGTERM before the heavy imports.

As PID 1 in a container a process has no default action for SIGTERM: one that arrives
while the modules load (most of a second) would be dropped and the container killed
after its grace period. The handler installed here turns it into :class:`Terminated`
until the daemon installs its own graceful handlers.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived before the command could handle it itself."""


#: The SIGTERMs the early handler saw. Kept as well as raised: CPython drops an exception
#: that a signal handler raises while it compiles a module's source (no .pyc to load,
#: as with PYTHONDONTWRITEBYTECODE), and the import goes on as if no signal had come.
_received: list[int] = []


def _terminate(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated


def main() -> int:
    """Install the early SIGTERM handler, then run the command line."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        from spikewatch.cli import main as cli_main  # noqa: PLC0415 - after the handler
    except Terminated:
        return _stopped()
    if _received:  # it came during a compile, and its exception was dropped
        return _stopped()
    try:
        return cli_main()
    except Terminated:
        return _stopped()


def _stopped() -> int:
    print("spikewatch: terminated", file=sys.stderr)
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    # Nothing was measured or lost; a one-off run that was stopped did not pass.
    return 1 if command == "once" else 0
