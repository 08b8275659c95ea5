"""DynamicBatcher: each rule with a controllable clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar, cast

import numpy as np
import pytest

from streamd.analysis.batcher import BatchDecision, BatchPolicy, DynamicBatcher, Waiting
from streamd.camera.slot import LatestFrameSlot
from streamd.frames.frame import Frame
from tests.support.waiting import run

DELAY, AGE = 0.010, 1.0


def policy(max_batch: int = 4) -> BatchPolicy:
    return BatchPolicy(max_batch=max_batch, max_delay_s=DELAY, max_age_s=AGE)


def test_full_batch_goes_at_once_oldest_first() -> None:
    waiting = [
        Waiting(k, t) for k, t in [("c", 100.003), ("a", 100.001), ("d", 100.004), ("b", 100.002), ("e", 100.005)]
    ]
    decision = policy(4).decide(waiting, now=100.005, engine_has_room=True)
    assert decision.take == ["a", "b", "c", "d"]  # e waits for the next batch
    assert decision.stale == []


def test_partial_batch_waits_until_the_oldest_frame_reaches_max_delay() -> None:
    waiting = [Waiting("a", 100.000), Waiting("b", 100.004)]
    early = policy().decide(waiting, now=100.005, engine_has_room=True)
    assert early.take == [] and early.wake_at == pytest.approx(100.010)
    on_time = policy().decide(waiting, now=100.010, engine_has_room=True)
    assert on_time.take == ["a", "b"]


def test_an_idle_engine_never_waits_for_a_minimum_batch() -> None:
    # One camera only: a batch of one goes as soon as its delay has passed.
    decision = policy(32).decide([Waiting("only", 50.0)], now=50.0 + DELAY, engine_has_room=True)
    assert decision.take == ["only"]


def test_nothing_goes_while_the_engine_has_no_room_even_a_full_batch() -> None:
    waiting = [Waiting(c, 10.0) for c in "abcd"]
    decision = policy(4).decide(waiting, now=10.5, engine_has_room=False)
    assert decision.take == []
    assert decision.wake_at == pytest.approx(10.0 + AGE)  # wake in time to drop them when stale


def test_frames_older_than_max_age_are_dropped_not_batched() -> None:
    waiting = [Waiting("old", 0.0), Waiting("new", 1.2)]
    decision = policy().decide(waiting, now=1.2 + DELAY, engine_has_room=True)
    assert decision.stale == ["old"] and decision.take == ["new"]
    busy = policy().decide(waiting, now=1.5, engine_has_room=False)
    assert busy.stale == ["old"] and busy.take == []


def test_nothing_waiting_means_no_wake_up() -> None:
    assert policy().decide([], now=5.0, engine_has_room=True) == policy().decide([], 6.0, False)
    assert policy().decide([], now=5.0, engine_has_room=True).wake_at is None


def test_rejects_a_zero_batch() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchPolicy(0, DELAY, AGE)


class RecordingEngine:
    """The edge: an engine stand-in that records batches and has room when told."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.room = True

    def has_room(self) -> bool:
        return self.room

    def idle(self) -> bool:
        return self.room and not self.batches

    def submit(self, frames: list[Frame]) -> None:
        self.batches.append([f.camera_id for f in frames])


def frame(camera_id: str, at: float) -> Frame:
    image = np.zeros((2, 2, 3), np.uint8)
    return Frame(camera_id, 0, 0.0, 0.0, at, 2, 2, image)


def test_batcher_takes_frames_out_of_slots_and_counts_stale_ones() -> None:
    async def scenario() -> tuple[list[list[str]], list[str], list[str]]:
        loop = asyncio.get_running_loop()
        now = [100.0]
        engine = RecordingEngine()
        stale: list[str] = []
        batcher = DynamicBatcher(policy(2), engine, lambda f: stale.append(f.camera_id), clock=lambda: now[0])
        slots = {c: LatestFrameSlot[Frame](loop) for c in "abc"}
        for camera_id, slot in slots.items():
            batcher.attach(camera_id, slot)
        slots["a"].put(frame("a", 98.0))  # stale by the time it is seen
        slots["b"].put(frame("b", 100.0))
        slots["c"].put(frame("c", 100.001))
        await asyncio.sleep(0)  # the slots announce their frames on the loop
        batcher.step()
        engine.room = False
        slots["a"].put(frame("a", 100.002))
        await asyncio.sleep(0)
        first = batcher.step()
        assert first.take == [] and slots["a"].peek() is not None  # waits in its slot
        engine.room = True
        now[0] = 100.002 + DELAY
        batcher.step()
        left = [c for c, s in slots.items() if s.peek() is not None]
        return engine.batches, stale, left

    batches, stale, left = run(scenario())
    assert batches == [["b", "c"], ["a"]]
    assert stale == ["a"]
    assert left == []


def test_running_batcher_sends_a_lone_frame_within_the_delay() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        engine = RecordingEngine()
        batcher = DynamicBatcher(BatchPolicy(8, 0.05, AGE), engine, lambda f: None)
        slot = LatestFrameSlot[Frame](loop)
        batcher.attach("a", slot)
        batcher.start()
        start = loop.time()
        slot.put(frame("a", __import__("time").monotonic()))
        while not engine.batches:
            await asyncio.sleep(0.002)
        waited = loop.time() - start
        await batcher.stop()
        return waited

    waited = run(scenario())
    assert 0.03 <= waited < 0.5  # held for about max_delay (50 ms), never indefinitely


def test_frames_arriving_while_the_engine_is_full_wait_without_a_decision_each_and_still_expire() -> None:
    async def scenario() -> tuple[int, list[str], list[list[str]]]:
        loop = asyncio.get_running_loop()
        engine = RecordingEngine()
        engine.room = False
        stale: list[str] = []
        batcher = DynamicBatcher(BatchPolicy(64, DELAY, AGE), engine, lambda f: stale.append(f.camera_id))
        decisions = 0
        decide = batcher.step

        def counted() -> BatchDecision:
            nonlocal decisions
            decisions += 1
            return decide()

        batcher.step = counted  # type: ignore[method-assign]
        slots = {f"cam{i:02d}": LatestFrameSlot[Frame](loop) for i in range(50)}
        for camera_id, slot in slots.items():
            batcher.attach(camera_id, slot)
        batcher.start()
        now = time.monotonic()
        slots["cam00"].put(frame("cam00", now - AGE + 0.1))  # goes stale in 0.1 s
        await asyncio.sleep(0.01)
        for camera_id, slot in list(slots.items())[1:]:
            slot.put(frame(camera_id, time.monotonic()))
            await asyncio.sleep(0)
        await asyncio.sleep(0.4)  # the first frame's expiry passes while the engine is full
        while_full = decisions
        engine.room = True
        batcher.wake()  # the engine freed a buffer
        while not engine.batches:
            await asyncio.sleep(0.002)
        await batcher.stop()
        return while_full, stale, engine.batches

    while_full, stale, batches = run(scenario())
    # One decision for the first frame and one at its expiry, not one per arriving frame.
    assert while_full <= 3
    assert stale == ["cam00"]
    assert batches == [[f"cam{i:02d}" for i in range(1, 50)]]


class CountedBatcher(DynamicBatcher):
    """The real batcher, counting its decisions."""

    decisions = 0

    def step(self) -> BatchDecision:
        self.decisions += 1
        return super().step()


AnyBatcher = TypeVar("AnyBatcher", bound=DynamicBatcher)


def started_batcher(
    policy: BatchPolicy, cameras: list[str], kind: type[AnyBatcher]
) -> tuple[RecordingEngine, AnyBatcher, dict[str, LatestFrameSlot[Frame]]]:
    """A running batcher of `kind` (on the current loop) with an empty slot per camera."""
    loop = asyncio.get_running_loop()
    engine = RecordingEngine()
    batcher = kind(policy, engine, lambda f: None)
    slots = {camera_id: LatestFrameSlot[Frame](loop) for camera_id in cameras}
    for camera_id, slot in slots.items():
        batcher.attach(camera_id, slot)
    batcher.start()
    return engine, batcher, slots


async def sent_within(engine: RecordingEngine, count: int, limit: float) -> float:
    """Seconds until the engine has `count` batches (fails past `limit`)."""
    start = time.monotonic()
    while len(engine.batches) < count:
        assert time.monotonic() - start < limit, f"{len(engine.batches)} of {count} batches after {limit}s"
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def test_frames_arriving_while_a_batch_waits_for_its_delay_need_no_decision_each_yet_a_full_batch_goes_at_once() -> (
    None
):
    delay = 0.3

    async def scenario() -> tuple[int, list[list[str]], float, float]:
        engine, batcher, slots = started_batcher(
            BatchPolicy(8, delay, AGE), [f"cam{i}" for i in range(8)], CountedBatcher
        )
        for camera_id in list(slots)[:5]:
            slots[camera_id].put(frame(camera_id, time.monotonic()))
            await asyncio.sleep(0.005)
        partial_after = await sent_within(engine, 1, 2.0)
        decisions = batcher.decisions
        for camera_id, slot in slots.items():  # eight: a full batch
            slot.put(frame(camera_id, time.monotonic()))
            await asyncio.sleep(0.002)
        full_after = await sent_within(engine, 2, 2.0)
        await batcher.stop()
        return decisions, engine.batches, partial_after, full_after

    decisions, batches, partial_after, full_after = run(scenario())
    # At the start, at the first arrival, when its delay is up, and after that batch
    # (is there more?): not one per arriving frame.
    assert decisions <= 4
    assert [sorted(batch) for batch in batches] == [[f"cam{i}" for i in range(5)], [f"cam{i}" for i in range(8)]]
    assert partial_after >= delay - 0.05 - 0.02  # the first frame's delay, less the arrivals' 20 ms
    assert full_after < delay / 2  # the eighth frame fills it: no waiting for the delay


def test_a_frame_due_before_the_pending_delay_still_decides_when_it_arrives() -> None:
    delay = 0.4

    async def scenario() -> tuple[float, list[list[str]]]:
        engine, batcher, slots = started_batcher(BatchPolicy(8, delay, AGE), ["new", "late"], DynamicBatcher)
        slots["new"].put(frame("new", time.monotonic()))
        await asyncio.sleep(0.01)
        # Captured long ago (a slow conversion, say): its delay is nearly up already.
        slots["late"].put(frame("late", time.monotonic() - delay + 0.05))
        took = await sent_within(engine, 1, 2.0)
        await batcher.stop()
        return took, engine.batches

    took, batches = run(scenario())
    assert took < 0.25, f"went after {took:.2f}s: it waited for the other frame's delay"
    assert [sorted(batch) for batch in batches] == [["late", "new"]]


class CountingLoop(asyncio.SelectorEventLoop):
    """A real event loop that counts the wake-ups other threads ask of it."""

    woken = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> asyncio.Handle:  # type: ignore[override]
        self.woken += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def test_decode_threads_do_not_wake_the_loop_for_frames_the_pending_batch_will_take() -> None:
    delay = 0.3

    async def scenario() -> tuple[int, list[list[str]]]:
        loop = asyncio.get_running_loop()
        engine, batcher, slots = started_batcher(
            BatchPolicy(8, delay, AGE), [f"cam{i}" for i in range(5)], DynamicBatcher
        )
        await asyncio.sleep(0.01)

        def decode_thread(camera_id: str) -> None:
            slots[camera_id].put(frame(camera_id, time.monotonic()))

        before = cast(CountingLoop, loop).woken
        await asyncio.to_thread(decode_thread, "cam0")  # the first: the loop decides to wait
        await asyncio.sleep(0.01)
        for camera_id in list(slots)[1:]:
            await asyncio.to_thread(decode_thread, camera_id)
        woken = cast(CountingLoop, loop).woken - before
        await sent_within(engine, 1, 2.0)
        await batcher.stop()
        return woken, engine.batches

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        woken, batches = runner.run(scenario())
    # to_thread itself wakes the loop once per call when its thread finishes (5), and the
    # first frame once: the four that came while the batch waited for its delay did not.
    assert woken == 5 + 1, woken
    assert [sorted(batch) for batch in batches] == [[f"cam{i}" for i in range(5)]]


def test_no_frame_is_stranded_when_decode_threads_race_the_loop() -> None:
    """Frames put from many threads at random moments, some while the loop is deciding:
    each is taken or replaced, and none is left waiting in its slot once they stop."""
    cameras, seconds = 24, 1.5

    async def scenario() -> tuple[int, int, int, list[int]]:
        engine, batcher, slots = started_batcher(
            BatchPolicy(6, 0.004, AGE), [f"cam{i}" for i in range(cameras)], DynamicBatcher
        )
        put = [0] * cameras

        def decode_thread(index: int) -> None:
            rng = np.random.default_rng(index)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                slots[f"cam{index}"].put(frame(f"cam{index}", time.monotonic()))
                put[index] += 1
                time.sleep(float(rng.uniform(0, 0.006)))

        await asyncio.gather(*(asyncio.to_thread(decode_thread, index) for index in range(cameras)))
        await asyncio.sleep(0.1)  # many times the delay
        waiting = [slot.peek() is not None for slot in slots.values()]
        await batcher.stop()
        taken = sum(len(batch) for batch in engine.batches)
        replaced = sum(slot.replaced for slot in slots.values())
        return taken, replaced, sum(put), [i for i, w in enumerate(waiting) if w]

    taken, replaced, put, stranded = run(scenario())
    assert stranded == []
    assert taken + replaced == put and taken > put / 2


def test_frames_arriving_while_the_engine_has_no_room_do_not_wake_the_loop_and_go_when_it_has() -> None:
    async def scenario() -> tuple[int, int, list[list[str]]]:
        loop = asyncio.get_running_loop()
        engine, batcher, slots = started_batcher(
            BatchPolicy(8, 0.005, AGE), [f"cam{i}" for i in range(5)], DynamicBatcher
        )
        engine.room = False

        def decode_thread(camera_id: str) -> None:
            slots[camera_id].put(frame(camera_id, time.monotonic()))

        await asyncio.to_thread(decode_thread, "cam0")
        await asyncio.sleep(0.05)  # decided: nothing can go
        before = cast(CountingLoop, loop).woken
        for camera_id in list(slots)[1:]:
            await asyncio.to_thread(decode_thread, camera_id)
        woken = cast(CountingLoop, loop).woken - before
        await asyncio.sleep(0.05)
        assert engine.batches == []
        engine.room = True
        await asyncio.to_thread(batcher.room_freed)  # as the engine runner does when a buffer frees
        await sent_within(engine, 1, 2.0)
        await asyncio.sleep(0.05)
        idle = cast(CountingLoop, loop).woken
        await asyncio.to_thread(batcher.room_freed)  # nothing waits: no wake-up for it
        idle = cast(CountingLoop, loop).woken - idle - 1
        await batcher.stop()
        return woken, idle, engine.batches

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        woken, idle, batches = runner.run(scenario())
    assert woken == 4, woken  # to_thread's own, one per call: none for the frames
    assert idle == 0, idle  # room with no frame waiting wakes nobody
    assert [sorted(batch) for batch in batches] == [[f"cam{i}" for i in range(5)]]


def test_a_camera_whose_frame_is_replaced_faster_than_the_delay_goes_within_the_delay_of_its_first_frame() -> None:
    # The slot keeps only the newest frame: frames every 4 ms with a 10 ms delay mean the
    # frame it holds is never 10 ms old. Timed by that frame, a camera alone (fewer than a
    # batch) never went.
    async def scenario() -> tuple[list[float], list[list[str]]]:
        loop = asyncio.get_running_loop()
        now = [100.0]
        engine = RecordingEngine()
        batcher = DynamicBatcher(policy(4), engine, lambda f: None, clock=lambda: now[0])
        slot = LatestFrameSlot[Frame](loop)
        batcher.attach("a", slot)
        sent_at = []
        for tick in range(12):
            now[0] = 100.0 + 0.004 * tick
            slot.put(frame("a", now[0]))
            if batcher.step().take:
                sent_at.append(round(now[0] - 100.0, 3))
        return sent_at, engine.batches

    sent_at, batches = run(scenario())
    # Waiting since 0 ms: goes at 12 ms (the first tick past 10); the next frame comes at
    # 16 ms and goes at 28, then 44.
    assert sent_at == [0.012, 0.028, 0.044]
    assert batches == [["a"], ["a"], ["a"]]


def test_the_camera_waiting_longest_decides_the_delay_not_the_age_of_the_frame_it_holds() -> None:
    replaced = Waiting("replaced", arrived=100.009, since=100.000)
    fresh = Waiting("fresh", arrived=100.005)
    assert policy().decide([replaced, fresh], now=100.010, engine_has_room=True).take == ["fresh", "replaced"]
    early = policy().decide([replaced, fresh], now=100.006, engine_has_room=True)
    assert early.take == [] and early.wake_at == pytest.approx(100.010)
