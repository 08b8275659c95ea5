"""Start as a stack, stop with one deadline shared out in phases.

Each part that starts pushes how to stop it. Stopping pops the parts last-started first,
so a start that fails or is cancelled half way stops exactly what it had started, and a
normal stop is the same walk. One deadline covers the whole stop: each step gets the
time left times its share of the shares still to come, so a step that finishes early
leaves its time to the later ones (the engine drain and the sink flush), and a step that
hangs is abandoned at the end of its share (and a short grace), not eating theirs. A step that fails or
overruns is logged and the walk goes on: every step is always tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_GRACE_S = 0.25

StopStep = Callable[[float], Awaitable[bool]]
"""Stops a part within the seconds given; False when it stopped but lost something."""


@dataclass(frozen=True)
class _Started:
    name: str
    stop: StopStep
    share: float


class Lifecycle:
    def __init__(self) -> None:
        self._stack: list[_Started] = []

    def started(self, name: str, stop: StopStep, share: float = 1.0) -> None:
        """`name` has started; `stop(seconds)` stops it, with `share` of the stop deadline."""
        if share <= 0:
            raise ValueError("share must be > 0")
        self._stack.append(_Started(name, stop, share))

    def __len__(self) -> int:
        return len(self._stack)

    async def unwind(self, deadline_s: float) -> bool:
        """Stop everything started, last first, within `deadline_s`; True when all stopped cleanly."""
        end = time.monotonic() + deadline_s
        clean = True
        while self._stack:
            step = self._stack.pop()
            shares = step.share + sum(later.share for later in self._stack)
            budget = max(0.0, end - time.monotonic()) * step.share / shares
            clean = await self._stop_one(step, budget) and clean
        return clean

    @staticmethod
    async def _stop_one(step: _Started, budget: float) -> bool:
        try:
            # The step is told its budget and keeps to it; this is the backstop for one
            # that does not, with a grace so one that returns right at the end is not cut.
            return await asyncio.wait_for(step.stop(budget), budget + _GRACE_S)
        except TimeoutError:
            log.error("stopping %s took longer than its %.1fs; going on without it", step.name, budget)
        except Exception:
            log.exception("stopping %s failed; going on with the rest", step.name)
        return False
