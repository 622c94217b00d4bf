"""WebSocket framing for a client (RFC 6455 §5), bytes in and events out.

The client masks what it sends (§5.3) and rejects masked frames from the server
(§5.1). Oversized frames are rejected from their header alone, before any payload
is buffered, so a frame that declares 2^40 bytes costs nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from spikewatch.errors import MessageTooBigError, ProtocolError
from spikewatch.protocol.deflate import Inflater
from spikewatch.protocol.entropy import random_bytes
from spikewatch.protocol.receive_budget import ReceiveBudget, ReceiveBudgetError


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: 0x41 and 0x42 are a compressed text or binary message's first frame: the parser keeps
#: RSV1 (0x40) in the opcode once it is allowed (RFC 7692 §6), so that the uncompressed
#: path pays nothing for it.
_DATA_OPCODES = frozenset((0x0, 0x1, 0x2, 0x41, 0x42))
_COMPRESSED = 0x40
_CONTROL_OPCODES = frozenset((0x8, 0x9, 0xA))

#: Close codes a peer may send (RFC 6455 §7.4.1 and the IANA registry); 3000-4999 are free.
_VALID_CLOSE_CODES = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
)

#: Frames one message may be split into. The size limit alone does not bound a message
#: of empty fragments, which costs a list entry and a parse each, forever (issue 12);
#: servers fragment rarely, and in pieces of kilobytes when they do.
MAX_FRAGMENTS = 1024

#: Control frames (pings, pongs) a peer may send within one second before the connection
#: is failed as a flood (close 1008). Servers ping every few seconds; thousands a second
#: cost a parse each and starve the loop that times every other connection (issue 12).
#: The exchange counts across reads; the parser stops a single read at the limit, since
#: frames read at once arrived within the second: a 256 KiB read of pings is ~2,000
#: frames, and parsing them all, for 50 connections at once, stalled the daemon's loop for
#: 0.2-0.4 s.
MAX_CONTROL_FRAMES_PER_SECOND = 1000

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


class ControlFloodError(ProtocolError):
    """More control frames at once than a peer may send in a second: close 1008."""


class InvalidUtf8Error(ProtocolError):
    """Text (a message or a close reason) that is not UTF-8: close code 1007 (§7.4.1, §8.1)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping the client must answer with a pong carrying the same payload."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong, usually the answer to our ping."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame: its code (None when it sent none) and reason."""

    code: int | None
    reason: str


Event = Message | Ping | Pong | Close


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    n = len(payload)
    if not n:
        return b""
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """Return one final, masked client frame; ``mask`` is random unless given (tests)."""
    if mask is None:
        mask = random_bytes(4)
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 0x10000:
        head = _PACK_16(first, 0x80 | 126, n)
    else:
        head = _PACK_64(first, 0x80 | 127, n)
    return head + mask + mask_payload(payload, mask)


def encode_close(code: int = 1000, reason: str = "") -> bytes:
    """Return a masked close frame with ``code`` and ``reason``."""
    return encode_frame(Opcode.CLOSE, code.to_bytes(2, "big") + reason.encode())


def _parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload (RFC 6455 §5.5.1)")
    code = int.from_bytes(payload[:2], "big")
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(f"close frame with invalid code {code} (RFC 6455 §7.4)")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError as exc:
        raise InvalidUtf8Error("close reason is not valid UTF-8 (RFC 6455 §5.5.1)") from exc
    return Close(code, reason)


class FrameParser:
    """Turn the server's bytes into :data:`Event` values, enforcing RFC 6455 §5."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_controls",
        "_fragments",
        "_fragments_size",
        "_held",
        "_max_message",
        "_message_opcode",
        "budget",
        "inflater",
        "partial",
    )

    def __init__(self, max_message_bytes: int, budget: ReceiveBudget | None = None) -> None:
        self._buffer = bytearray()
        #: Shared with every other connection: the bytes all of them may hold at once.
        self.budget = budget
        self._held = 0
        self._max_message = max_message_bytes
        self._message_opcode = -1  # opcode of the fragmented message in progress, -1 if none
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._closed = False
        self._controls = 0  # control frames in the current feed
        #: The decompressor when permessage-deflate was agreed: RSV1 is allowed then.
        self.inflater: Inflater | None = None
        #: When :meth:`feed` raised: the events of the frames before the violation, which
        #: the caller still owes an answer (a ping's pong, say), in order.
        self.partial: list[Event] = []

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the events they complete (possibly none).

        A close frame is the last thing read: what follows it, in the same bytes or
        later, is discarded unparsed (RFC 6455 §5.5.1: the peer sends nothing after it).
        A violation raises :class:`ProtocolError`, with the events of the frames before it
        in :attr:`partial`.
        """
        if self._closed:
            return []
        buf = self._buffer
        buf += data
        # The events so far are kept in ``partial`` as they come, so a violation raised
        # below leaves there what preceded it.
        events: list[Event] = []
        self.partial = events
        self._controls = 0
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                self._check_reserved(b0)
            if b1 & 0x80:
                raise ProtocolError("masked frame from the server (RFC 6455 §5.1)")
            opcode = b0 & 0x4F  # RSV1 kept: 0x41/0x42 is a compressed message's first frame
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
                if length >> 63:
                    raise ProtocolError("frame length with the most significant bit set (§5.2)")
            fin = b0 & 0x80
            self._check_header(opcode, fin, length)
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            event = self._on_frame(opcode, fin, payload)
            if event is not None:
                events.append(event)
                if type(event) is Close:
                    self._closed = True
                    buf.clear()
                    return events
        if pos:
            del buf[:pos]
        if self.budget is not None:
            held = len(buf) + self._fragments_size
            if held != self._held:
                self._account(held)
        return events

    def _account(self, held: int) -> None:
        """Charge the shared budget with what is held now (raise past it; ``partial``
        then holds the events of this feed)."""
        budget = self.budget
        assert budget is not None
        if held > self._held:
            budget.take(held - self._held)
        else:
            budget.give(self._held - held)
        self._held = held

    def release(self) -> None:
        """Drop what is buffered and give its bytes back to the budget; parse no more."""
        self._closed = True
        if self._held:
            self._buffer = bytearray()
            self._fragments = []
            self._fragments_size = 0
            if self.budget is not None:
                self.budget.give(self._held)
            self._held = 0

    def _check_reserved(self, b0: int) -> None:
        """Allow RSV1 on the first frame of a data message once deflate is agreed (RFC 7692
        §6); anything else with a reserved bit set is a violation (RFC 6455 §5.2)."""
        if self.inflater is None:
            raise ProtocolError("reserved bits set but no extension was negotiated (§5.2)")
        opcode = b0 & 0x0F
        if b0 & 0x30:
            raise ProtocolError("RSV2 or RSV3 set; permessage-deflate uses RSV1 only (§5.2)")
        if opcode in _CONTROL_OPCODES:
            raise ProtocolError("RSV1 set on a control frame (RFC 7692 §6.1)")
        if opcode == Opcode.CONTINUATION:
            raise ProtocolError("RSV1 set on a continuation frame (RFC 7692 §6.1)")

    def _check_header(self, opcode: int, fin: int, length: int) -> None:
        if opcode in _CONTROL_OPCODES:
            if not fin or length > 125:
                raise ProtocolError("fragmented or oversized control frame (RFC 6455 §5.5)")
            self._controls += 1
            if self._controls > MAX_CONTROL_FRAMES_PER_SECOND:
                raise ControlFloodError(
                    f"more than {MAX_CONTROL_FRAMES_PER_SECOND} control frames within 1s"
                )
            return
        if opcode not in _DATA_OPCODES:
            raise ProtocolError(f"unknown opcode {opcode & 0x0F:#x} (RFC 6455 §5.2)")
        in_progress = self._message_opcode >= 0
        if opcode == Opcode.CONTINUATION and not in_progress:
            raise ProtocolError("continuation frame without a message to continue (§5.4)")
        if opcode != Opcode.CONTINUATION and in_progress:
            raise ProtocolError("new data frame inside a fragmented message (§5.4)")
        if in_progress and len(self._fragments) >= MAX_FRAGMENTS:
            raise ProtocolError(f"message split into more than {MAX_FRAGMENTS} fragments")
        if self._fragments_size + length > self._max_message:
            raise MessageTooBigError(
                f"message of at least {self._fragments_size + length} bytes exceeds "
                f"max_message_bytes={self._max_message}"
            )

    def _on_frame(self, opcode: int, fin: int, payload: bytes) -> Event | None:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        if opcode == Opcode.CLOSE:
            return _parse_close(payload)
        if not fin:
            if opcode != Opcode.CONTINUATION:
                self._message_opcode = opcode
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            return None
        if opcode == Opcode.CONTINUATION:
            self._fragments.append(payload)
            payload = b"".join(self._fragments)
            opcode = self._message_opcode
            self._fragments = []
            self._fragments_size = 0
            self._message_opcode = -1
        if opcode == Opcode.TEXT:
            try:
                return Message(payload.decode())
            except UnicodeDecodeError as exc:
                raise InvalidUtf8Error("text message is not valid UTF-8 (RFC 6455 §8.1)") from exc
        if opcode == Opcode.BINARY:
            return Message(payload)
        return self._inflated(opcode, payload)

    def _inflated(self, opcode: int, payload: bytes) -> Message:
        """Decompress a whole compressed message (RFC 7692 §7.2.2).

        What it decompresses to is charged to the shared budget until the end of this
        :meth:`feed` (its messages are handed out then), like bytes that are buffered, and
        zlib never produces more than the budget's room or ``max_decompressed_bytes``.
        """
        inflater = self.inflater
        assert inflater is not None  # RSV1 is refused without it
        budget = self.budget
        cap = inflater.limit
        if budget is not None:
            cap = min(cap, budget.limit - budget.held)
        data = inflater.inflate(payload, cap)
        if data is None:  # more than the room the budget has left
            assert budget is not None
            budget.refused += 1
            raise ReceiveBudgetError(budget.explain())
        if budget is not None and data:
            self._account(self._held + len(data))  # given back at the end of feed
        if opcode & 0x0F == Opcode.TEXT:
            try:
                return Message(data.decode())
            except UnicodeDecodeError as exc:
                raise InvalidUtf8Error("text message is not valid UTF-8 (RFC 6455 §8.1)") from exc
        return Message(data)
