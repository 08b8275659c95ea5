"""Frame consumers that are not the detector.

`DiscardingConsumer` takes every frame out of every camera's slot and lets it go. It is
what the daemon runs until the detector stage exists, and what an ingest benchmark
uses to measure cameras alone. Taking frames promptly matters: an unconsumed slot would
count every new frame as a drop.
"""

from __future__ import annotations

import asyncio

import av
import numpy as np

from streamd.base.tasks import cancel_and_wait
from streamd.camera.decoder import to_rgb
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import Detached
from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox


class DiscardingConsumer:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def convert(self, frame: av.VideoFrame) -> tuple[np.ndarray, Letterbox | None]:
        return to_rgb(frame)

    def keeps_pictures(self) -> bool:
        return False

    async def start(self) -> None:
        pass

    async def stop(self, timeout: float = 0.0) -> bool:
        for camera_id in list(self._tasks):
            await self.detach(camera_id)
        return True

    def attach(self, camera_id: str, slot: LatestFrameSlot[Frame], priority: int = 0) -> None:
        self._tasks[camera_id] = asyncio.create_task(self._drain(slot), name=f"drain-{camera_id}")

    async def detach(self, camera_id: str, why: Detached = Detached.stopped) -> None:
        await cancel_and_wait(self._tasks.pop(camera_id, None))

    async def _drain(self, slot: LatestFrameSlot[Frame]) -> None:
        while True:
            await slot.get()
