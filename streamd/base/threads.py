"""Run blocking work in a thread of its own and await it from the event loop.

asyncio's default executor has min(32, cores + 4) workers: six on a two-core box, far
too few for seventy cameras that each block in a read for their whole life. Each
long-running blocking job gets a dedicated daemon thread instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_in_thread(func: Callable[[], T], name: str) -> T:
    """Run `func` in a new daemon thread; the result or exception comes back here.

    Cancelling the awaiting task does not stop the thread (nothing can); the caller
    tells `func` to stop through its own flag and may stop waiting for it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle_result(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def settle_error(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def target() -> None:
        try:
            value = func()
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            _drop_locals(error)
            callback, argument = settle_error, error
        else:
            callback, argument = settle_result, value  # type: ignore[assignment]
        # RuntimeError: the loop closed while we worked, and nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, argument)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


def _drop_locals(error: BaseException) -> None:
    """Clear the local variables of the finished frames in `error`'s tracebacks, its
    causes' and contexts' too; the file and line of each frame stay for the log.

    Those locals are what the thread worked with: for a camera, its container, decoder
    and last frames (about 25 MB at 1080p). Frames in a traceback form reference cycles
    with the exception, and the cycle collector reaches such old objects only in a full
    collection, which a busy daemon may not run for a long time: measured, every
    reconnect of a 1080p camera kept 8 MB more resident and two more threads
    (libswscale's) until one ran.
    """
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)  # frames still running are left as they are
        pending += [current.__cause__, current.__context__]
