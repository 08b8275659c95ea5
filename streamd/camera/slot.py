"""The latest-frame slot between a camera's decode thread and the analysis stage.

It holds at most one frame. A new frame replaces an unconsumed one and the caller
counts that as a drop, so memory and latency stay bounded when analysis falls behind:
the system degrades by analysing fewer frames, never by queueing more.

`put` is called from the decode thread, `get` awaited on the event loop; the slot
itself is guarded by a lock, and only the wake-up crosses to the loop. A reader that
sets `on_filled` (the batcher) is told in the decode thread instead and wakes its loop
only when it has to: a wake-up per frame was most of the event loop's work per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        # Told when a frame is taken: recorded video waits on it instead of replacing.
        self._taken = threading.Condition(self._lock)
        self._item: T | None = None
        self.replaced = 0
        """Frames replaced before they were taken, so far (the batcher watches it)."""
        self._ready = asyncio.Event()
        self.on_filled: Callable[[T], None] | None = None
        """Called in the putting thread when an empty slot receives a frame; while set,
        the slot does not wake `get` itself."""

    def put(self, item: T) -> bool:
        """Store `item` (any thread). Returns True when it replaced an unconsumed one."""
        with self._lock:
            replaced = self._item is not None
            self._item = item
            self.replaced += replaced
        if not replaced:
            filled = self.on_filled
            if filled is not None:
                filled(item)
            else:
                # RuntimeError: the loop is closed, the daemon is exiting and nobody will read.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._ready.set)
        return replaced

    def wait_empty(self, stop: threading.Event) -> bool:
        """Wait until the frame held is taken (any thread but the loop's): back-pressure
        for recorded video, where every frame counts and none may be replaced. The one
        putter then puts. False when `stop` was set first."""
        with self._taken:
            while self._item is not None:
                if stop.is_set():
                    return False
                # The timeout only bounds how late a stop is seen; a take wakes it at once.
                self._taken.wait(0.1)
        return True

    def peek(self) -> T | None:
        """The waiting frame without taking it."""
        with self._lock:
            return self._item

    def take(self) -> T | None:
        """The waiting frame, or None; never blocks. Event loop thread only."""
        with self._lock:
            item, self._item = self._item, None
            self._ready.clear()
            if item is not None:
                self._taken.notify_all()
            return item

    async def get(self) -> T:
        """Wait for the next frame."""
        while True:
            item = self.take()
            if item is not None:
                return item
            await self._ready.wait()
