"""Starting a batch a chunk per loop iteration."""

from __future__ import annotations

import asyncio
import contextlib

from spikewatch.engine.launch import launch
from tests.conftest import scaled


async def test_every_item_starts_in_order_a_chunk_per_iteration() -> None:
    """All items start, in order; what became ready meanwhile runs between chunks."""
    loop = asyncio.get_running_loop()
    events: list[str] = []

    async def start(item: int) -> None:
        events.append(f"start {item}")
        if item == 0:  # as if the first connection's answer had arrived
            loop.call_soon(events.append, "answer")

    def spawn(coro: object) -> asyncio.Task[None]:
        return loop.create_task(coro)  # type: ignore[arg-type]

    tasks = await launch(list(range(7)), start, spawn, chunk=3)
    await asyncio.gather(*tasks)
    starts = [e for e in events if e.startswith("start")]
    assert starts == [f"start {i}" for i in range(7)]
    # What became ready during the first chunk runs before the second chunk starts.
    assert events.index("answer") < events.index("start 3")


async def test_an_empty_batch_starts_nothing() -> None:
    """No items: no tasks, no yield needed."""
    assert await launch([], lambda _: asyncio.sleep(0), asyncio.ensure_future) == []


async def test_cancelled_mid_batch_ends_the_tasks_it_started() -> None:
    """A launch cancelled between chunks cancels what it spawned: no caller holds them."""
    loop = asyncio.get_running_loop()
    spawned: list[asyncio.Task[None]] = []
    forever = loop.create_future()

    async def start(item: int) -> None:
        await forever

    def spawn(coro: object) -> asyncio.Task[None]:
        task = loop.create_task(coro)  # type: ignore[arg-type]
        spawned.append(task)
        return task

    launcher = loop.create_task(launch(list(range(10)), start, spawn, chunk=3))
    while len(spawned) < 3:
        await asyncio.sleep(0)
    launcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await launcher
    try:
        done, pending = await asyncio.wait(spawned, timeout=scaled(2))
        assert not pending, f"{len(pending)} spawned task(s) left running"
        assert all(task.cancelled() for task in done)
    finally:
        forever.cancel()
