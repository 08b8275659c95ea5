"""The latest-frame slot between a camera's decode thread and the analysis stage.

It holds at most one frame. A new frame replaces an unconsumed one and the caller
counts that as a drop, so memory and latency stay bounded when analysis falls behind:
the system degrades by analysing fewer frames, never by queueing more.

`put` is called from the decode thread, `get` awaited on the event loop; the slot
itself is guarded by a lock, and only the wake-up crosses to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._item: T | None = None
        self._ready = asyncio.Event()

    def put(self, item: T) -> bool:
        """Store `item` (any thread). Returns True when it replaced an unconsumed one."""
        with self._lock:
            replaced = self._item is not None
            self._item = item
        if not replaced:
            # RuntimeError: the loop is closed, the daemon is exiting and nobody will read.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ready.set)
        return replaced

    def take(self) -> T | None:
        """The waiting frame, or None; never blocks."""
        with self._lock:
            item, self._item = self._item, None
            self._ready.clear()
            return item

    async def get(self) -> T:
        """Wait for the next frame."""
        while True:
            item = self.take()
            if item is not None:
                return item
            await self._ready.wait()
