"""The client side of one WebSocket connection as a state machine, bytes in and bytes out.

In the manner of websockets' ``protocol.py``: the engine writes what :meth:`data_to_send`
returns, feeds what it reads to :meth:`receive_data` (and the end of the stream to
:meth:`receive_eof`), and reads what happened from :meth:`events_received`. Nothing here
touches a socket, a timer or a clock, so every protocol rule is tested bytes in, bytes
out. What the connection is *for* (the welcome, the echo, the keepalive) is the engine's;
what the protocol demands (the upgrade checks, the pong, the close handshake, what
happens after a Close) is decided here.

States, in the order a healthy connection passes through them::

    CONNECTING --101--> OPEN --send_close()--> CLOSING --peer's Close--> CLOSED
        |                 \\--peer's Close (answered)----------------------^
        \\--other status, bad answer, violation, EOF--------------------------^

Once CLOSED nothing more is read or sent: the engine closes the TCP connection (for a
client the server should close it first, RFC 6455 §7.1.1; the engine bounds that wait).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from spikewatch.errors import MessageTooBigError, ProtocolError
from spikewatch.protocol.deflate import DeflateOffer, DeflateParams, Deflater, Inflater
from spikewatch.protocol.frames import (
    Close,
    ControlFloodError,
    FrameParser,
    InvalidUtf8Error,
    Message,
    Opcode,
    Ping,
    Pong,
    encode_close,
    encode_frame,
)
from spikewatch.protocol.handshake import UpgradeResponse, check_upgrade, parse_response_head
from spikewatch.protocol.receive_budget import ReceiveBudget, ReceiveBudgetError

#: Close codes this side sends when the peer breaks the protocol (RFC 6455 §7.4.1).
PROTOCOL_ERROR_CODE = 1002
INVALID_DATA_CODE = 1007
POLICY_VIOLATION_CODE = 1008
MESSAGE_TOO_BIG_CODE = 1009


class State(IntEnum):
    """Where the connection stands (RFC 6455 §4 and §7)."""

    CONNECTING = 0  # the upgrade request is out; its answer is awaited
    OPEN = 1
    CLOSING = 2  # our close frame is out; the peer's is awaited
    CLOSED = 3  # nothing more is read or sent


@dataclass(frozen=True, slots=True)
class Upgraded:
    """The server accepted the upgrade (101, every RFC 6455 §4.1 check passed)."""

    response: UpgradeResponse
    subprotocol: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server answered the upgrade with a status other than 101."""

    response: UpgradeResponse


@dataclass(frozen=True, slots=True)
class Failed:
    """The peer broke the protocol; the connection is failed (RFC 6455 §7.1.7).

    ``code`` is the close code sent to the peer, or None when the upgrade had not
    completed (there is no WebSocket connection to send a close frame on).
    """

    detail: str
    code: int | None
    #: True when the prober's own limit failed it (the receive budget), not the peer.
    by_prober: bool = False


#: Everything :meth:`ClientSession.events_received` can return, in the order it happened.
SessionEvent = Upgraded | Rejected | Failed | Message | Ping | Pong | Close


class ClientSession:
    """One client connection's protocol state, from the upgrade request to the close."""

    __slots__ = (
        "_budget",
        "_deflate",
        "_deflater",
        "_events",
        "_head",
        "_key",
        "_max_message",
        "_offered",
        "_out",
        "_parser",
        "answer_pings",
        "close_received",
        "close_sent",
        "deflate",
        "deflate_declined",
        "state",
    )

    def __init__(
        self,
        request: bytes,
        key: bytes,
        offered: tuple[str, ...],
        max_message_bytes: int,
        budget: ReceiveBudget | None = None,
        *,
        deflate: DeflateOffer | None = None,
    ) -> None:
        self.state = State.CONNECTING
        self._budget = budget
        #: The permessage-deflate offer the request carries (None: no extension offered).
        self._deflate = deflate
        #: The compressor once deflate is agreed: every data message sent is compressed.
        self._deflater: Deflater | None = None
        #: What permessage-deflate the server agreed to (None: not offered, or declined),
        #: and whether it was offered and the server's answer left it out; both set with
        #: :class:`Upgraded`.
        self.deflate: DeflateParams | None = None
        self.deflate_declined = False
        self._key = key
        self._offered = offered
        self._max_message = max_message_bytes
        self._head = bytearray()
        self._parser: FrameParser | None = None
        self._out: list[bytes] = [request]
        self._events: list[SessionEvent] = []
        #: Whether a ping is answered with a pong (RFC 6455 §5.5.2). A caller that cannot
        #: write (the peer reads nothing) turns it off rather than queue pongs unbounded.
        self.answer_pings = True
        #: The peer's close frame, once received; the code we sent, once sent.
        self.close_received: Close | None = None
        self.close_sent: int | None = None

    # -- what the engine reads ----------------------------------------------------------

    def events_received(self) -> list[SessionEvent]:
        """Return what happened since the last call, oldest first."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> bytes:
        """Return the bytes to write now (empty when there is nothing)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    # -- what the engine feeds ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes read from the connection."""
        state = self.state
        if state == State.CONNECTING:
            self._receive_head(data)
        elif state != State.CLOSED:
            self._receive_frames(data)
        # CLOSED: anything after the close handshake or a failure is discarded.

    def receive_eof(self) -> None:
        """Take the end of the stream: the peer closed (or half-closed) TCP."""
        self.release()

    def release(self) -> None:
        """Drop any partial message and give its bytes back to the shared budget.

        Nothing more is read after it: the session is CLOSED.
        """
        self.state = State.CLOSED
        parser = self._parser
        if parser is not None:
            self._parser = None
            parser.release()

    # -- what the engine sends ----------------------------------------------------------

    def send_text(self, data: bytes) -> None:
        """Queue a text message (``data`` already UTF-8); nothing once closing (§5.5.1)."""
        if self.state == State.OPEN:
            deflater = self._deflater
            if deflater is None:
                self._out.append(encode_frame(Opcode.TEXT, data))
            else:  # RSV1 on the (only) frame: a compressed message (RFC 7692 §6)
                self._out.append(encode_frame(0x40 | Opcode.TEXT, deflater.compress(data)))

    def send_binary(self, data: bytes) -> None:
        """Queue a binary message; nothing once closing (§5.5.1)."""
        if self.state == State.OPEN:
            deflater = self._deflater
            if deflater is None:
                self._out.append(encode_frame(Opcode.BINARY, data))
            else:
                self._out.append(encode_frame(0x40 | Opcode.BINARY, deflater.compress(data)))

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping (at most 125 bytes, §5.5); nothing once closing."""
        if self.state == State.OPEN:
            self._out.append(encode_frame(Opcode.PING, payload))

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2).

        Before the upgrade completed there is no WebSocket connection to close: the
        session is CLOSED at once and the engine drops the TCP connection.
        """
        state = self.state
        if state == State.OPEN:
            self._out.append(encode_close(code, reason))
            self.close_sent = code
            self.state = State.CLOSING
        elif state == State.CONNECTING:
            self.state = State.CLOSED

    # -- the upgrade --------------------------------------------------------------------

    def _receive_head(self, data: bytes) -> None:
        head = self._head
        head += data
        try:
            parsed = parse_response_head(head)
            if parsed is None:
                return
            response, used = parsed
            if response.status != 101:
                self.state = State.CLOSED
                self._events.append(Rejected(response))
                return
            offer = self._deflate
            if offer is None:
                subprotocol = check_upgrade(response, self._key, self._offered)
            else:
                subprotocol = check_upgrade(response, self._key, self._offered, extensions=True)
                agreed = offer.accept(response.header("sec-websocket-extensions"))
        except ProtocolError as exc:
            # §4.1: "the client MUST _Fail the WebSocket Connection_"; no frame can be sent.
            self.state = State.CLOSED
            self._events.append(Failed(str(exc), None))
            return
        rest = bytes(head[used:])
        self._head = bytearray()
        parser = self._parser = FrameParser(self._max_message, self._budget)
        self.state = State.OPEN
        if offer is not None:
            if agreed is None:
                self.deflate_declined = True
            else:
                self.deflate = agreed
                parser.inflater = Inflater(agreed, offer.max_decompressed_bytes)
                self._deflater = Deflater(agreed)
        self._events.append(Upgraded(response, subprotocol))
        if rest:
            self._receive_frames(rest)

    # -- frames -------------------------------------------------------------------------

    def _receive_frames(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        error: ProtocolError | ReceiveBudgetError | None = None
        try:
            events = parser.feed(data)
        except (ProtocolError, ReceiveBudgetError) as exc:
            # The frames before the violation still happened: answer their pings first.
            events, error = parser.partial, exc
        queue = self._events
        # §5.5.3: of pings read at once, answering the most recent is enough (a pong each
        # would cost a masked frame each; a flood reads ~1,000 at once).
        ping: Ping | None = None
        for event in events:
            kind = type(event)
            if kind is Ping:
                ping = event  # type: ignore[assignment]
            elif kind is Close:
                if ping is not None:
                    self._pong(ping)
                    ping = None
                self._receive_close(event)  # type: ignore[arg-type]
            queue.append(event)
        if ping is not None:
            self._pong(ping)
        if error is not None:
            if isinstance(error, ReceiveBudgetError):
                self._fail(str(error), MESSAGE_TOO_BIG_CODE, by_prober=True)
            elif isinstance(error, MessageTooBigError):
                self._fail(str(error), MESSAGE_TOO_BIG_CODE)
            elif isinstance(error, InvalidUtf8Error):
                self._fail(str(error), INVALID_DATA_CODE)
            elif isinstance(error, ControlFloodError):
                self._fail(str(error), POLICY_VIOLATION_CODE)
            else:
                self._fail(str(error), PROTOCOL_ERROR_CODE)

    def _pong(self, ping: Ping) -> None:
        # §5.5.2: answer with the ping's payload, unless our close frame is out (§5.5.1:
        # nothing is sent after it) or the peer reads nothing (see ``answer_pings``).
        if self.state == State.OPEN and self.answer_pings:
            self._out.append(encode_frame(Opcode.PONG, ping.payload))

    def _receive_close(self, close: Close) -> None:
        self.close_received = close
        if self.state == State.OPEN:
            # §5.5.1: answer a close with a close, echoing the status code it carried
            # (none when it carried none).
            if close.code is None:
                self._out.append(encode_frame(Opcode.CLOSE, b""))
            else:
                self._out.append(encode_close(close.code))
            self.close_sent = close.code
        # The parser stops at the close frame: what follows it is discarded (§5.5.1).
        self.state = State.CLOSED
        self.release()

    def _fail(self, detail: str, code: int, *, by_prober: bool = False) -> None:
        # §7.1.7: fail the connection; a close frame first, since the connection is open.
        if self.state == State.OPEN:
            self._out.append(encode_close(code))
            self.close_sent = code
        self.state = State.CLOSED
        self.release()
        self._events.append(Failed(detail, code, by_prober))
