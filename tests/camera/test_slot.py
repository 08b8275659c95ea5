from __future__ import annotations

import asyncio
import threading

from streamd.camera.slot import LatestFrameSlot
from tests.support.waiting import run


def test_new_item_replaces_unconsumed_one_and_says_so() -> None:
    async def scenario() -> None:
        slot: LatestFrameSlot[int] = LatestFrameSlot(asyncio.get_running_loop())
        assert slot.put(1) is False
        assert slot.put(2) is True
        assert slot.take() == 2
        assert slot.take() is None
        assert slot.put(3) is False

    run(scenario())


def test_get_wakes_for_an_item_put_from_another_thread() -> None:
    async def scenario() -> list[int]:
        slot: LatestFrameSlot[int] = LatestFrameSlot(asyncio.get_running_loop())
        received: list[int] = []

        async def consume() -> None:
            for _ in range(3):
                received.append(await slot.get())

        consumer = asyncio.create_task(consume())
        for value in (10, 20, 30):
            thread = threading.Thread(target=slot.put, args=(value,))
            thread.start()
            thread.join()
            await asyncio.sleep(0.02)
        await asyncio.wait_for(consumer, 2)
        return received

    assert run(scenario()) == [10, 20, 30]


def test_slow_consumer_sees_only_the_latest_and_memory_stays_bounded() -> None:
    async def scenario() -> tuple[int, int | None]:
        slot: LatestFrameSlot[int] = LatestFrameSlot(asyncio.get_running_loop())
        replaced = sum(slot.put(i) for i in range(1000))
        return replaced, slot.take()

    assert run(scenario()) == (999, 999)
