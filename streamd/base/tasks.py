"""Small asyncio helpers for parts that own a background task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where installed (the `speed` extra), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has really finished.

    A task that already ended with an exception does not raise it here: its crash was
    reported when it happened (supervision), and a stop must go on to its next step.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
