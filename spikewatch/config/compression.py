"""A target's ``compression``: permessage-deflate (RFC 7692), offered only when asked for.

Absent (the default), the upgrade request offers no extension and the connection is
exactly as before. With ``deflate: true`` the request offers permessage-deflate; a server
may accept (every data message is then compressed both ways) or decline (the connection
goes on uncompressed, and the run's ``detail.deflate_declined`` counts it).
"""

from __future__ import annotations

from pydantic import Field

from spikewatch.config.fields import ConfigSection
from spikewatch.protocol.deflate import MAX_WINDOW_BITS, MIN_WINDOW_BITS, DeflateOffer

__all__ = ["CompressionConfig"]

#: RFC 7692 §7.1.2 allows 8 to 15; zlib cannot compress with 8 (see protocol/deflate.py).
_WindowBits = Field(default=MAX_WINDOW_BITS, ge=MIN_WINDOW_BITS, le=MAX_WINDOW_BITS)


class CompressionConfig(ConfigSection):
    """Which compression to offer the target, and how much a message may decompress to."""

    #: Offer permessage-deflate (false keeps the section but offers nothing).
    deflate: bool = True
    #: The largest LZ77 window the client compresses with (2^bits bytes); the server may
    #: ask for a smaller one. Offered as ``client_max_window_bits`` (without a value at 15).
    client_max_window_bits: int = _WindowBits
    #: The largest window the server may compress with; below 15 it is offered as
    #: ``server_max_window_bits`` and the server must agree to it or to less.
    server_max_window_bits: int = _WindowBits
    #: Promise the server that each client message is compressed on its own.
    client_no_context_takeover: bool = False
    #: Ask the server to compress each message on its own; a server that accepts the offer
    #: without agreeing fails the connection (RFC 7692 §7.1.1.1).
    server_no_context_takeover: bool = False
    #: The size a server message may decompress to; past it the connection is closed with
    #: 1009 and the attempt is a ``protocol_error``. Defaults to the target's
    #: ``max_message_bytes`` (which bounds the compressed size on the wire).
    max_decompressed_bytes: int | None = Field(default=None, ge=125)

    def offer(self, max_message_bytes: int) -> DeflateOffer | None:
        """Return the offer a connection makes, or None when deflate is off."""
        if not self.deflate:
            return None
        limit = self.max_decompressed_bytes
        return DeflateOffer(
            client_max_window_bits=self.client_max_window_bits,
            server_max_window_bits=self.server_max_window_bits,
            client_no_context_takeover=self.client_no_context_takeover,
            server_no_context_takeover=self.server_no_context_takeover,
            max_decompressed_bytes=max_message_bytes if limit is None else limit,
        )
