"""DynamicBatcher: frames from all cameras -> batches for the one engine.

The rules are Triton's dynamic batcher's, kept in `BatchPolicy`, which is pure (the
clock is an argument) so each rule is tested with exact times:

1. a full batch (`max_batch` frames waiting) goes at once;
2. otherwise the camera that has waited longest waits at most `max_delay`, then
   whatever is waiting goes: there is no minimum batch that may never come. A camera
   waits from the first frame its emptied slot received, not from the frame it holds
   now: a slot replaced faster than `max_delay` always holds a frame younger than the
   delay, and timed by that frame, fewer cameras than a batch never went at all
   (measured: 20 cameras at 100 fps, `max_delay_ms` 30: nothing analysed);
3. nothing goes while the engine has no room (both buffers busy); frames keep waiting in
   their cameras' slots, where a newer frame replaces an older one;
4. a frame older than `max_age` is dropped and counted as stale instead of analysed;
5. when more cameras wait than a batch holds, higher `priority` goes first, and among
   equal priorities the camera that has had the fewest turns (frames taken). Ordering
   by frame age starves a camera whose slot keeps getting a newer frame: it never holds
   the oldest one (measured: 5.0 against 0.6 fps between two cameras of the same rate);
   ordering by the time of the last turn ties whole groups of cameras and the tie goes
   to the same ones every time (measured in simulation: 5.0 against 2.5 fps). Counting
   turns is stride scheduling: equal priorities get equal shares (max-min fair: a
   slower camera gets all its frames, the others share the rest), lower priorities get
   what the higher ones leave. A camera never counts as more than one turn behind the
   most-served camera of its priority, so one that was down or just added does not
   take the engine over to catch up;
6. while cameras of some priority lose frames (replaced in their slot, or stale), lower
   priorities wait: for `_HOLD_S` after each loss only that priority and higher ones
   are batched, and a lower-priority frame goes only to an idle engine with nothing
   else waiting, one at a time, so it fills a gap without holding up the next
   higher-priority frame for long. A slot holds one frame, so a camera contributes at
   most one frame per batch; without this rule a slow engine running full batches gave
   each high-priority camera one frame per batch and the rest of the batch to low ones
   (measured: high priority at 2.6 of its 5 fps while low priority still got 1.3).

`DynamicBatcher` runs the policy on the event loop. Frames stay in their latest-frame
slots until a batch takes them, so the slot's replace-and-count rule keeps holding
while the engine is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.camera.slot import LatestFrameSlot
from streamd.frames.frame import Frame

log = logging.getLogger(__name__)

# A timer set for the delay can fire a hair early in float arithmetic; without slack
# the loop would wake, find 9.999 ms < 10 ms, and sleep again for nothing.
_CLOCK_SLACK_S = 1e-6
# After a camera loses a frame, lower priorities wait this long (rule 6). Long, because
# they still fill the engine's idle gaps meanwhile (measured in simulation: 1 s let high
# priority fall to 4.2 of 5 fps, 10 s to 4.9).
_HOLD_S = 10.0


class Waiting(NamedTuple):
    """A camera with a frame waiting in its slot."""

    key: str
    arrived: float
    """When the frame was captured (monotonic seconds)."""
    priority: int = 0
    turns: int = 0
    """Frames of this camera taken into batches (counted as rule 5 says)."""
    served: float = float("-inf")
    """When a frame of this camera was last taken into a batch (breaks ties)."""
    since: float | None = None
    """When the camera began waiting: the capture time of the first frame its emptied
    slot received (None: `arrived`, no frame was replaced meanwhile)."""

    @property
    def waiting_since(self) -> float:
        return self.arrived if self.since is None else self.since


@dataclass(frozen=True)
class BatchDecision:
    take: list[str] = field(default_factory=list)
    """Cameras whose frames form the batch to send now, in turn order (rule 5)."""
    stale: list[str] = field(default_factory=list)
    """Cameras whose frames are too old to analyse."""
    wake_at: float | None = None
    """When to decide again if nothing else happens (None: only on news)."""


class BatchPolicy:
    def __init__(self, max_batch: int, max_delay_s: float, max_age_s: float) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_age_s = max_age_s

    def decide(
        self,
        waiting: Sequence[Waiting],
        now: float,
        engine_has_room: bool,
        lowest_priority: int | None = None,
        engine_idle: bool = False,
    ) -> BatchDecision:
        """`waiting`: every camera with a frame waiting; `lowest_priority`: lower ones wait
        unless the engine is idle (rule 6)."""
        stale = [w.key for w in waiting if now - w.arrived > self.max_age_s]
        fresh = [w for w in waiting if now - w.arrived <= self.max_age_s]
        if not fresh:
            return BatchDecision(stale=stale)
        expiry = min(w.arrived for w in fresh) + self.max_age_s
        if not engine_has_room:
            return BatchDecision(stale=stale, wake_at=expiry)
        eligible = [w for w in fresh if lowest_priority is None or w.priority >= lowest_priority]
        if not eligible:
            if engine_idle:  # a gap to fill: one frame, so the next eligible one hardly waits
                return BatchDecision(take=[_in_turn(fresh)[0].key], stale=stale)
            return BatchDecision(stale=stale, wake_at=expiry)
        oldest = min(w.waiting_since for w in eligible)
        if len(eligible) >= self.max_batch or now - oldest >= self.max_delay_s - _CLOCK_SLACK_S:
            return BatchDecision(take=[w.key for w in _in_turn(eligible)[: self.max_batch]], stale=stale)
        return BatchDecision(stale=stale, wake_at=min(oldest + self.max_delay_s, expiry))


def _in_turn(waiting: Sequence[Waiting]) -> list[Waiting]:
    """Rule 5's order."""
    return sorted(waiting, key=lambda w: (-w.priority, w.turns, w.served, w.arrived))


class BatchSink(Protocol):
    """Where the batcher sends its batches (the engine runner)."""

    def has_room(self) -> bool: ...

    def idle(self) -> bool:
        """Nothing in the engine at all."""
        ...

    def submit(self, frames: list[Frame]) -> None: ...


class DynamicBatcher:
    def __init__(
        self,
        policy: BatchPolicy,
        sink: BatchSink,
        on_stale: Callable[[Frame], None],
        clock: Callable[[], float] = time.monotonic,
        failures: Failures | None = None,
    ) -> None:
        self.policy = policy
        self.failures = failures or Failures()
        self.sink = sink
        self.on_stale = on_stale
        self.clock = clock
        self._slots: dict[str, LatestFrameSlot[Frame]] = {}
        self._priority: dict[str, int] = {}
        self._served: dict[str, float] = {}
        self._turns: dict[str, int] = {}
        self._most_turns: dict[int, int] = {}  # by priority
        self._replaced_seen: dict[str, int] = {}
        self._losing_until: dict[int, float] = {}  # priority -> end of its hold on lower ones
        # Cameras whose slot may hold a frame: a step looks at these only, not at every
        # camera (with 200 cameras, scanning them all on each arrival cost O(N^2) a second).
        self._ready: set[str] = set()
        # When each ready camera began waiting (rule 2).
        self._since: dict[str, float] = {}
        # Cameras whose empty slot got a frame (and that frame's capture time), told in
        # their decode threads; a step moves them to `_ready`. Guarded by
        # `_arrivals_lock`, as is `_quiet_until`.
        self._arrivals: list[tuple[str, float]] = []
        self._arrivals_lock = threading.Lock()
        # Set while a batch waits only for its oldest frame's delay (the timer is due at
        # this time): an arriving frame then changes nothing unless it fills the batch
        # or is due sooner, so its decode thread does not wake the loop at all.
        self._quiet_until: float | None = None
        # Set while nothing can go because the engine has no room: arrivals change nothing
        # then, and the engine's room wakes the loop.
        self._waiting_for_room = False
        self._news = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_fired = False
        self._task: asyncio.Task[None] | None = None

    def attach(self, camera_id: str, slot: LatestFrameSlot[Frame], priority: int = 0) -> None:
        self._slots[camera_id] = slot
        self._priority[camera_id] = priority
        self._replaced_seen[camera_id] = slot.replaced
        slot.on_filled = functools.partial(self._filled, camera_id)
        frame = slot.peek()  # put before the hook was set: not told
        if frame is not None:
            self._filled(camera_id, frame)

    def detach(self, camera_id: str) -> None:
        self._priority.pop(camera_id, None)
        self._served.pop(camera_id, None)
        self._turns.pop(camera_id, None)
        self._replaced_seen.pop(camera_id, None)
        self._not_waiting(camera_id)
        slot = self._slots.pop(camera_id, None)
        if slot is not None:
            slot.on_filled = None

    def wake(self) -> None:
        """Something changed (a frame arrived, the engine freed a buffer). Loop thread only."""
        self._news.set()

    def _filled(self, camera_id: str, frame: Frame) -> None:
        """An empty slot received `frame` (its decode thread, or the loop at attach)."""
        with self._arrivals_lock:
            self._arrivals.append((camera_id, frame.captured_mono))
            if self._waiting_for_room:
                return
            # While quiet the loop is between steps, so `_ready` holds still.
            quiet_until = self._quiet_until
            if (
                quiet_until is not None
                and len(self._ready) + len(self._arrivals) < self.policy.max_batch
                and frame.captured_mono + self.policy.max_delay_s >= quiet_until
            ):
                return  # the pending timer's step takes it with the rest
        self._wake_from_thread()

    def room_freed(self) -> None:
        """The engine freed an input buffer (its thread). Wakes the loop only when a frame
        waits: with none, a decision would find nothing to send."""
        with self._arrivals_lock:
            # `_ready` is read without the loop's say: a stale answer only costs a wake-up.
            if not (self._waiting_for_room or self._ready or self._arrivals):
                return
        self._wake_from_thread()

    def _wake_from_thread(self) -> None:
        loop = self._loop
        if loop is not None:  # before start, the first step finds what is there
            # RuntimeError: the loop is closed, the daemon is exiting and nobody will read.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._news.set)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = self.failures.watch(asyncio.create_task(self._run(), name="batcher"), "batcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._set_timer(None)

    def step(self) -> BatchDecision:
        """Decide once and act on it; returns the decision (for tests and the loop)."""
        with self._arrivals_lock:
            # From here on every arrival wakes the loop, until it is quiet again.
            self._quiet_until = None
            self._waiting_for_room = False
            for camera_id, captured in self._arrivals:
                if camera_id in self._slots:
                    self._ready.add(camera_id)
                    # The first frame after the slot was emptied starts the wait; a camera
                    # already waiting keeps its start.
                    self._since.setdefault(camera_id, captured)
            self._arrivals.clear()
        now = self.clock()
        waiting = []
        # A slot only replaces a frame it holds, so the ready cameras are the only ones
        # that can have lost one since the last step.
        for camera_id in list(self._ready):
            slot = self._slots[camera_id]
            if slot.replaced != self._replaced_seen[camera_id]:
                self._replaced_seen[camera_id] = slot.replaced
                self._losing(camera_id, now)
            frame = slot.peek()
            if frame is None:
                self._not_waiting(camera_id)
                continue
            priority = self._priority[camera_id]
            served = self._served.get(camera_id, float("-inf"))
            since = self._since.get(camera_id)
            waiting.append(Waiting(camera_id, frame.captured_mono, priority, self._turns_of(camera_id), served, since))
        losing = [priority for priority, until in self._losing_until.items() if until > now]
        lowest = max(losing, default=None)
        decision = self.policy.decide(waiting, now, self.sink.has_room(), lowest, self.sink.idle())
        if lowest is not None and any(w.priority < lowest for w in waiting):
            # Frames held back by rule 6 are looked at again when the hold ends.
            hold_ends = self._losing_until[lowest]
            wake_at = hold_ends if decision.wake_at is None else min(decision.wake_at, hold_ends)
            decision = BatchDecision(decision.take, decision.stale, wake_at)
        for camera_id in decision.stale:
            frame = self._slots[camera_id].take()
            self._not_waiting(camera_id)
            if frame is not None:
                self._losing(camera_id, now)
                self.on_stale(frame)
        if decision.take:
            frames = [f for f in (self._slots[c].take() for c in decision.take) if f is not None]
            for frame in frames:
                frame.times.taken_mono = now
            for camera_id in decision.take:
                self._not_waiting(camera_id)
                self._served[camera_id] = now
                turns = self._turns[camera_id] = self._turns_of(camera_id) + 1
                priority = self._priority[camera_id]
                self._most_turns[priority] = max(self._most_turns.get(priority, 0), turns)
            if frames:
                self.sink.submit(frames)
        return decision

    def _not_waiting(self, camera_id: str) -> None:
        """The camera's slot was emptied: its next frame starts a new wait."""
        self._ready.discard(camera_id)
        self._since.pop(camera_id, None)

    def _losing(self, camera_id: str, now: float) -> None:
        self._losing_until[self._priority[camera_id]] = now + _HOLD_S

    def _turns_of(self, camera_id: str) -> int:
        floor = self._most_turns.get(self._priority[camera_id], 0) - 1
        return max(self._turns.get(camera_id, floor), floor)

    async def _run(self) -> None:
        engine_full = False
        while True:
            self._news.clear()
            if engine_full and not self._timer_fired and not self.sink.has_room():
                # Only frames arrived, and the engine has no room: nothing can be taken,
                # and the earliest expiry among the waiting is already timed (a new frame
                # expires later). Deciding again here cost a scan of every waiting camera
                # per arriving frame (measured at 200 cameras on a busy engine: 416 us a
                # frame on the loop, against 131 on an idle one).
                await self._news.wait()
                continue
            self._timer_fired = False
            decision = self.step()
            engine_full = not decision.take and decision.wake_at is not None and not self.sink.has_room()
            if decision.take:
                continue  # there may be enough for another batch right away
            # Waiting for the delay (a frame's age limit or a priority hold is later): the
            # frames arriving meanwhile need no decision each. Measured at 200 cameras, the
            # event loop went from 111-124 to 54-68 us a frame while quiet arrivals still
            # woke it, and by another quarter (45-65 -> 30-45, alternating runs) since their
            # decode threads do not.
            quiet = (
                decision.wake_at is not None
                and not engine_full
                and decision.wake_at - self.clock() <= self.policy.max_delay_s
            )
            if quiet or engine_full:
                # A frame that arrived during the step saw no quiet and woke the loop.
                with self._arrivals_lock:
                    self._quiet_until = decision.wake_at if quiet else None
                    self._waiting_for_room = engine_full
            # One timer at a time, set by hand: `asyncio.wait_for` would make a task and a
            # timer on every wait, and the batcher waits once per arriving frame.
            self._set_timer(decision.wake_at)
            await self._news.wait()

    def _set_timer(self, wake_at: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wake_at is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, wake_at - self.clock()), self._timer_due)

    def _timer_due(self) -> None:
        self._timer_fired = True
        self._news.set()
