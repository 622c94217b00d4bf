"""permessage-deflate (RFC 7692) for the client, sans I/O: the offer, the server's answer,
and the per-connection compressor and decompressor.

The offer is one ``Sec-WebSocket-Extensions`` element; the server's answer is checked
against RFC 7692 §5 and §7 (one element, only the extension offered, known parameters
once each, window bits within what was offered) and becomes :class:`DeflateParams`, or
None when the server declined (it may: §5, the connection is then uncompressed).

Memory: zlib objects are large (a compressor with a 2^15 window and memLevel 5 is about
144 KiB, a decompressor about 7 KiB plus its 2^bits window once used). Both are created
lazily, on the first message that needs them; with ``no_context_takeover`` on a side, that
side's object is created per message and dropped after it, so a held connection keeps
nothing of it.

Decompression is bounded: at most ``max_decompressed_bytes`` per message (zlib's
``max_length``, so a zip bomb never gets further than the bound plus one byte), and never
more than ``cap`` bytes at once (the room left in the prober's receive budget).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from spikewatch.errors import MessageTooBigError, ProtocolError

#: The extension's registered name (RFC 7692 §7).
EXTENSION = "permessage-deflate"

#: RFC 7692 §7.2.2: the four bytes a sender removes from the end of each message.
_TAIL = b"\x00\x00\xff\xff"

#: Window bits a configuration may ask for. RFC 7692 §7.1.2 allows 8 to 15, but zlib cannot
#: compress with a 256-byte window (it refuses 8 for raw deflate), so a zlib-based peer
#: asked for 8 cannot honour it: 9 is the floor here.
MIN_WINDOW_BITS = 9
MAX_WINDOW_BITS = 15

#: zlib's memLevel for the client's compressor: the prober's messages are small, and
#: memLevel 5 (as websockets' client uses) is 16 KiB of hash tables instead of 128 KiB.
_MEM_LEVEL = 5

_KNOWN_PARAMS = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: One ``extension-param`` (RFC 6455 §9.1): ``token [ "=" ( token | quoted-string ) ]``.
_PARAM = re.compile(rf'\s*({_TCHARS})\s*(?:=\s*(?:({_TCHARS})|"((?:[^"\\]|\\.)*)"))?\s*')
#: RFC 7692 §7.1.2.1: a decimal integer from 8 to 15, without leading zeros.
_BITS = re.compile(r"[89]|1[0-5]")


@dataclass(frozen=True, slots=True)
class DeflateParams:
    """What the client and the server agreed (RFC 7692 §7.1)."""

    #: The window the client compresses with (2^bits bytes).
    client_max_window_bits: int
    #: The window the server compresses with, so the one the client decompresses with.
    server_max_window_bits: int
    client_no_context_takeover: bool
    server_no_context_takeover: bool


@dataclass(frozen=True, slots=True)
class DeflateOffer:
    """What a target's ``compression`` asks the server for, and the decompression bound."""

    client_max_window_bits: int = MAX_WINDOW_BITS
    server_max_window_bits: int = MAX_WINDOW_BITS
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False
    max_decompressed_bytes: int = 1_048_576

    @property
    def header_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the offer.

        ``client_max_window_bits`` is always sent (the client supports a smaller window,
        §7.1.2.2), with its value when below 15; ``server_max_window_bits`` only when
        below 15, the default.
        """
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits < MAX_WINDOW_BITS:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits < MAX_WINDOW_BITS:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        else:
            parts.append("client_max_window_bits")
        return "; ".join(parts)

    def accept(self, answer: str | None) -> DeflateParams | None:
        """Check the server's ``Sec-WebSocket-Extensions`` answer against this offer.

        Return the agreed parameters, or None when the server declined (no header).
        Raise :class:`ProtocolError` for an answer RFC 7692 does not allow.
        """
        if answer is None or not answer.strip():
            return None
        elements = parse_extensions(answer)
        names = [name for name, _ in elements]
        for name in names:
            if name.lower() != EXTENSION:
                raise ProtocolError(
                    f"the server selected extension {name!r}, which was not offered "
                    f"(only {EXTENSION} was; RFC 6455 §9.1)"
                )
        if len(elements) > 1:
            raise ProtocolError(
                f"the server selected {EXTENSION} {len(elements)} times; one was offered "
                "(RFC 7692 §5)"
            )
        return self._agree(elements[0][1])

    def _agree(self, params: list[tuple[str, str | None]]) -> DeflateParams:
        seen: dict[str, str | None] = {}
        for name, value in params:
            if name not in _KNOWN_PARAMS:
                raise ProtocolError(
                    f"the server's {EXTENSION} answer has unknown parameter {name!r} (RFC 7692 §7)"
                )
            if name in seen:
                raise ProtocolError(f"the server's {EXTENSION} answer repeats {name} (RFC 7692 §7)")
            seen[name] = value
        for name in ("server_no_context_takeover", "client_no_context_takeover"):
            if seen.get(name) is not None:
                raise ProtocolError(
                    f"the server's {EXTENSION} answer gives {name} a value "
                    f"({seen[name]!r}); it has none (RFC 7692 §7.1.1)"
                )
        server_nct = "server_no_context_takeover" in seen
        if self.server_no_context_takeover and not server_nct:
            raise ProtocolError(
                f"the server accepted {EXTENSION} without server_no_context_takeover, "
                "which was offered (RFC 7692 §7.1.1.1)"
            )
        server_bits = self._server_bits(seen)
        client_bits = self._client_bits(seen)
        return DeflateParams(
            client_max_window_bits=client_bits,
            server_max_window_bits=server_bits,
            client_no_context_takeover=(
                self.client_no_context_takeover or "client_no_context_takeover" in seen
            ),
            server_no_context_takeover=server_nct,
        )

    def _server_bits(self, seen: dict[str, str | None]) -> int:
        if "server_max_window_bits" not in seen:
            if self.server_max_window_bits < MAX_WINDOW_BITS:
                raise ProtocolError(
                    f"the server accepted {EXTENSION} without server_max_window_bits, "
                    f"which was offered as {self.server_max_window_bits} (RFC 7692 §7.1.2.1)"
                )
            return MAX_WINDOW_BITS
        bits = _bits("server_max_window_bits", seen["server_max_window_bits"])
        if bits > self.server_max_window_bits:
            raise ProtocolError(
                f"the server answered server_max_window_bits={bits}, above the "
                f"{self.server_max_window_bits} offered (RFC 7692 §7.1.2.1)"
            )
        return bits

    def _client_bits(self, seen: dict[str, str | None]) -> int:
        if "client_max_window_bits" not in seen:
            return self.client_max_window_bits
        bits = _bits("client_max_window_bits", seen["client_max_window_bits"])
        if bits > self.client_max_window_bits:
            raise ProtocolError(
                f"the server answered client_max_window_bits={bits}, above the "
                f"{self.client_max_window_bits} offered (RFC 7692 §7.1.2.2)"
            )
        if bits < MIN_WINDOW_BITS:
            raise ProtocolError(
                f"the server answered client_max_window_bits={bits}: zlib cannot compress "
                f"with a window below 2^{MIN_WINDOW_BITS} bytes"
            )
        return bits


def _bits(name: str, value: str | None) -> int:
    if value is None or _BITS.fullmatch(value) is None:
        raise ProtocolError(
            f"the server's {EXTENSION} answer has {name}={value!r}; it must be a whole "
            "number from 8 to 15 (RFC 7692 §7.1.2)"
        )
    return int(value)


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse a ``Sec-WebSocket-Extensions`` value (RFC 6455 §9.1) into its elements.

    Each element is its name and its parameters in order; a quoted value is unquoted
    (RFC 6455 §9.1 asks it to be a token once unquoted). Raise :class:`ProtocolError`
    when the value does not follow the grammar.
    """
    elements: list[tuple[str, list[tuple[str, str | None]]]] = []
    for element in _split(header, ","):
        pieces = _split(element, ";")
        name = pieces[0].strip()
        if not re.fullmatch(_TCHARS, name):
            raise ProtocolError(f"malformed Sec-WebSocket-Extensions answer {header[:80]!r}")
        params: list[tuple[str, str | None]] = []
        for piece in pieces[1:]:
            match = _PARAM.fullmatch(piece)
            if match is None:
                raise ProtocolError(f"malformed Sec-WebSocket-Extensions answer {header[:80]!r}")
            param, token, quoted = match.groups()
            value = token
            if quoted is not None:
                value = re.sub(r"\\(.)", r"\1", quoted)
                if not re.fullmatch(_TCHARS, value):
                    raise ProtocolError(
                        f"malformed Sec-WebSocket-Extensions answer {header[:80]!r}: "
                        "a quoted value must be a token (RFC 6455 §9.1)"
                    )
            params.append((param.lower(), value))
        elements.append((name, params))
    return elements


def _split(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside double quotes."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


class Deflater:
    """The client's compressor: one message in, the payload of its first frame out."""

    __slots__ = ("_compressor", "_reset", "_wbits")

    def __init__(self, params: DeflateParams) -> None:
        self._wbits = -params.client_max_window_bits
        self._reset = params.client_no_context_takeover
        self._compressor: zlib._Compress | None = None

    def compress(self, data: bytes) -> bytes:
        """Return ``data`` compressed (RFC 7692 §7.2.1), the final 4 bytes removed."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, self._wbits, _MEM_LEVEL
            )
            if not self._reset:
                self._compressor = compressor  # context takeover: kept for the next one
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4]  # a sync flush always ends with 00 00 ff ff (§7.2.1)

    @property
    def holding(self) -> bool:
        """Whether a compressor is kept between messages (context takeover)."""
        return self._compressor is not None


class Inflater:
    """The client's decompressor for the server's messages, bounded per message."""

    __slots__ = ("_decompressor", "_reset", "_wbits", "limit")

    def __init__(self, params: DeflateParams, max_decompressed_bytes: int) -> None:
        # A larger window than the server's always decodes it; 8 is read as 9, as zlib
        # itself compresses with 9 when asked for 8.
        self._wbits = -max(params.server_max_window_bits, MIN_WINDOW_BITS)
        self._reset = params.server_no_context_takeover
        self._decompressor: zlib._Decompress | None = None
        #: The decompressed size no message may exceed (``max_decompressed_bytes``).
        self.limit = max_decompressed_bytes

    @property
    def holding(self) -> bool:
        """Whether a decompressor is kept between messages (context takeover)."""
        return self._decompressor is not None

    def inflate(self, payload: bytes, cap: int) -> bytes | None:
        """Return the message ``payload`` decompressed, or None when it would exceed ``cap``
        bytes (``cap`` <= :attr:`limit`; the caller says which bound that was).

        Raise :class:`ProtocolError` for data that is not deflate, and
        :class:`MessageTooBigError` past :attr:`limit`.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(self._wbits)
            if not self._reset:
                self._decompressor = decompressor
        try:
            # cap + 1: more output than cap means too big, whatever zlib holds back.
            out = decompressor.decompress(payload + _TAIL, cap + 1)
        except zlib.error as exc:
            self._decompressor = None
            raise ProtocolError(
                f"the compressed message is not valid deflate data ({exc})"
            ) from exc
        if len(out) > cap:
            self._decompressor = None  # its state is mid-message: unusable
            if cap >= self.limit:
                raise MessageTooBigError(
                    f"message decompresses to more than max_decompressed_bytes={self.limit}"
                )
            return None
        if decompressor.eof:
            # The server ended the stream with a final block (BFINAL=1, which RFC 7692
            # §7.2.3 allows): the next message is read with a fresh window, as zlib cannot
            # go on after the end of a stream; a server that then refers back to earlier
            # messages fails with 1002 (a limit, in the README). Anything after the final
            # block but our tail is not part of any deflate stream.
            self._decompressor = None
            if decompressor.unused_data not in (b"", _TAIL):
                raise ProtocolError("data after the final deflate block of a message")
        return out
