"""A hostile WebSocket target for the soak: each connection meets the next mode in turn.

``python bench/hostile_target.py [--listen 127.0.0.1:0] [--message-bytes 262144]``

Raw asyncio on loopback, so that it can send what no WebSocket library would. The modes,
in this order, over and over (issue 12's attacks, with healthy answers between and after
them so that runs vary: some meet the attacks in their spike, some in their baseline,
some not at all):

- ``healthy``: the welcome, then echo and a proper closing handshake;
- ``ping_flood``: pings as fast as the client takes them, never reading a pong;
- ``empty_fragments``: a text message continued by empty fragments, never finished;
- ``unfinished``: a binary frame declaring ``--message-bytes`` minus 1 KiB, all but its last
  byte sent, then silence;
- ``never_reads``: the welcome, then no byte read and the close never answered;
- ``close_junk``: a close frame with junk after it in the same write.

Every connection sends at most ``FLOOD_BYTES`` and is held at most ``HOLD_SECONDS``, so the
target's own traffic and lifetime stay bounded whatever the client does. It prints
``serving ws://HOST:PORT/ws`` on stderr once listening, a count per mode on exit (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import signal
import struct
import sys
from collections.abc import Awaitable, Callable

#: RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: What one connection sends at most, and how long it is held at most.
FLOOD_BYTES = 2 * 2**20
HOLD_SECONDS = 30.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")
WELCOME = b'{"type":"welcome"}'

Mode = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None
) -> bytes:
    """Encode one unmasked frame (RFC 6455 §5.2); ``length`` overrides the declared length."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([size])
    elif size <= 0xFFFF:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    return head + payload


async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the upgrade request and answer it with a correct 101."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = ""
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    digest = hashlib.sha1(key.encode() + GUID, usedforsecurity=False).digest()
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + base64.b64encode(digest) + b"\r\n\r\n"
    )
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """Read one client frame; return its opcode, FIN and unmasked payload."""
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    if size > 2**20:
        raise ValueError("client frame too large")
    mask = await reader.readexactly(4) if second & 0x80 else b"\0\0\0\0"
    data = await reader.readexactly(size)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return first & 0x0F, bool(first & 0x80), payload


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer pings, echo data frames, echo a close frame and return."""
    while True:
        opcode, fin, payload = await read_frame(reader)
        if opcode == 0x8:
            writer.write(frame(0x8, payload[:2]))
            await writer.drain()
            return
        if opcode == 0x9:
            writer.write(frame(0xA, payload))
        elif opcode in (0x0, 0x1, 0x2):
            writer.write(frame(opcode, payload, fin=fin))
        await writer.drain()


async def flood(writer: asyncio.StreamWriter, chunk: bytes) -> None:
    """Write ``chunk`` as fast as the client takes it, FLOOD_BYTES at most, reading nothing."""
    for _ in range(FLOOD_BYTES // len(chunk)):
        if writer.is_closing():
            return
        writer.write(chunk)
        await writer.drain()
    await asyncio.sleep(HOLD_SECONDS)  # the flood's end: hold on, still reading nothing


async def healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await upgrade(reader, writer)
    writer.write(frame(0x1, WELCOME))
    await serve(reader, writer)


async def ping_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await upgrade(reader, writer)
    await flood(writer, frame(0x9, b"p" * 125) * 256)


async def empty_fragments(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
) -> None:
    await upgrade(reader, writer)
    writer.write(frame(0x1, b"", fin=False))
    await flood(writer, frame(0x0, b"", fin=False) * 4096)


async def unfinished(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    await upgrade(reader, writer)
    declared = size - 1024
    writer.write(frame(0x2, b"m" * (declared - 1), length=declared))
    await writer.drain()
    await asyncio.wait_for(reader.read(), HOLD_SECONDS)  # until the client closes


async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await upgrade(reader, writer)
    writer.write(frame(0x1, WELCOME))
    await writer.drain()
    await asyncio.sleep(HOLD_SECONDS)


async def close_junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    await upgrade(reader, writer)
    writer.write(frame(0x8, struct.pack("!H", 1000) + b"bye") + b"\x81\x05junk!" + b"\xff" * 4096)
    await serve(reader, writer)


#: The modes in the order connections meet them: the attacks, healthy answers between
#: them, then a healthy stretch longer than a soak's run (2 baseline probes, 12 spike
#: connections, a few recovery probes), so that some runs meet no attack and pass.
MODES: tuple[Mode, ...] = (
    healthy,
    ping_flood,
    healthy,
    empty_fragments,
    healthy,
    unfinished,
    healthy,
    never_reads,
    healthy,
    close_junk,
    *[healthy] * 24,
)


class HostileTarget:
    """The server: the next mode for each connection, and a count per mode."""

    def __init__(self, message_bytes: int) -> None:
        self.message_bytes = message_bytes
        self.accepted = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.tasks: set[asyncio.Task[None]] = set()

    async def cancel_all(self) -> None:
        """Cancel every connection still held, and wait for them (on exit)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        mode = MODES[self.accepted % len(MODES)]
        self.accepted += 1
        self.counts[mode.__name__] += 1
        try:
            await mode(reader, writer, self.message_bytes)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent nonsense: this connection is over
        except (TimeoutError, ValueError):
            pass  # held for HOLD_SECONDS, or a frame too large to read: over too
        except asyncio.CancelledError:
            # Exiting (cancel_all). Not re-raised: on Python 3.11 the streams' done
            # callback calls exception() on the task, which raises for a cancelled one.
            pass
        finally:
            self.tasks.discard(task)
            writer.close()


async def main_async(host: str, port: int, message_bytes: int) -> int:
    target = HostileTarget(message_bytes)
    server = await asyncio.start_server(target.handle, host, port)
    bound = server.sockets[0].getsockname()
    print(f"hostile target: serving ws://{bound[0]}:{bound[1]}/ws", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
        server.close()
        await target.cancel_all()
    counts = ", ".join(f"{name} {count}" for name, count in sorted(target.counts.items()))
    print(f"hostile target: {target.accepted} connections ({counts})", file=sys.stderr)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT on loopback")
    parser.add_argument(
        "--message-bytes",
        type=int,
        default=256 * 1024,
        help="the client's max_message_bytes, which unfinished messages come close to",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    args.host = host.strip("[]")
    if args.host not in LOOPBACK or not port.isdigit():
        parser.error("--listen must be a loopback HOST:PORT")
    args.port = int(port)
    if not 2048 <= args.message_bytes <= 16 * 2**20:
        parser.error("--message-bytes must be 2048 to 16 MiB")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args.host, args.port, args.message_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
