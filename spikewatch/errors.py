"""The one exception root of spikewatch.

Every error spikewatch raises on purpose derives from :class:`SpikewatchError`, wherever
it is defined (the module, when not this one, is on the right; a test walks the package
to keep this tree whole)::

    SpikewatchError
    ├── ConfigError            a config file or override is invalid (every problem)
    ├── UsageError             the command line names something that does not exist
    ├── AuthError              a JWT could not be minted (missing or unreadable key)
    ├── ProtocolError          the peer broke RFC 6455 or RFC 9112 (``protocol_error``)
    │   ├── MessageTooBigError     a frame or message exceeds ``max_message_bytes``
    │   ├── InvalidUtf8Error       text that is not UTF-8 (close 1007)  protocol.frames
    │   └── ControlFloodError      a second's control frames at once (1008)  protocol.frames
    ├── ReceiveBudgetError     the prober's receive buffers are full  protocol.receive_budget
    ├── TemplateError          a capture does not fit its template     protocol.conversation
    ├── WireError              a worker message outside the protocol   engine.worker_messages
    ├── WorkerLostError        a worker exited or stopped answering    engine.worker_pool
    ├── RunRequestError        a run cannot be requested now (400)     daemon.state
    │   ├── UnknownPairError       no such target/scenario pair (404)  daemon.state
    │   ├── AlreadyQueuedError     already running or queued (409)     daemon.state
    │   └── QueueFullError         the run queue is full (429)         daemon.state
    ├── ApiError               an HTTP error answer, with its status   daemon.api
    ├── StoreError             the run history cannot be opened/used   daemon.run_store
    └── InvalidKnobError       a knob the reference target lacks       target.behaviour

``WireError``, ``TemplateError`` and ``InvalidKnobError`` also derive from ``ValueError``:
they are bad values, to a caller that knows only that. Outside the tree on purpose: ``Terminated``
(``_entry``) is a ``BaseException``, like ``KeyboardInterrupt``, so that no ``except
Exception`` swallows a SIGTERM during start-up; the config loader's private YAML error
never leaves the loader (it becomes a ``ConfigError``).

Failures of a *target* are not exceptions that escape: the engine turns them into
outcomes (see :mod:`spikewatch.core.outcomes`). These exceptions are for the places
where a caller must act: fix the config, fix the command line, fix a key file.
"""

from __future__ import annotations

from dataclasses import dataclass


class SpikewatchError(Exception):
    """Root of every error spikewatch raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config, at a field path like ``scenarios[0].spike.batches``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(SpikewatchError):
    """The config is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid config{where}:\n{lines}")


class UsageError(SpikewatchError):
    """The command line asks for something that does not exist (an unknown target, say)."""


class AuthError(SpikewatchError):
    """A per-connection credential could not be produced."""


class ProtocolError(SpikewatchError):
    """The peer sent something RFC 6455 / RFC 9112 does not allow."""


class MessageTooBigError(ProtocolError):
    """A frame or a reassembled message is larger than the configured limit."""
