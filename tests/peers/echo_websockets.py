"""A plain echo service on Python's ``websockets``: every message goes back as it came.

Prints one JSON line per event from the server: listening (with the port), open, message,
close (with the code the client sent). Run with the interpreter that has ``websockets``.
"""

from __future__ import annotations

import asyncio
import json
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def say(**event: object) -> None:
    """Print one event as a JSON line."""
    print(json.dumps(event), flush=True)


async def echo(ws: ServerConnection) -> None:
    """Echo every message; report the close code the client sent."""
    say(event="open")
    try:
        async for message in ws:
            say(event="message")
            await ws.send(message)
    except ConnectionClosed:
        pass
    say(event="close", code=ws.close_code)


async def main() -> None:
    """Serve on a free loopback port until SIGTERM."""
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        say(event="listening", port=next(iter(server.sockets)).getsockname()[1])
        await stop


if __name__ == "__main__":
    asyncio.run(main())
