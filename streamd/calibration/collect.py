"""`streamd calibrate collect`: calibration frames from the configured cameras.

The cameras run exactly as in the daemon (CameraSource, sampling, reconnects); a frame
consumer takes at most one frame per camera every `interval_s`, so the set spreads over
time and over cameras instead of filling up from the first one. Every k-th kept frame
goes to the held-out split (`held_out_share`), round-robin over cameras too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from pathlib import Path

import av
import numpy as np

from streamd.base.errors import InputError
from streamd.base.tasks import cancel_and_wait
from streamd.base.threads import run_in_thread
from streamd.calibration.manifest import FrameEntry, save_manifest, write_jpeg
from streamd.camera.decoder import to_rgb
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.state import Detached
from streamd.config.schema import StreamsConfig
from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox
from streamd.metrics.registry import Metrics
from streamd.service.cameras import Supervisor

log = logging.getLogger(__name__)


class _Collector:
    """A frame consumer that keeps a spread-out sample of frames."""

    def __init__(self, out_dir: Path, count: int, interval_s: float, held_out_share: float) -> None:
        self.out_dir = out_dir
        self.count = count
        self.interval_s = interval_s
        self.held_out_every = round(1 / held_out_share) if held_out_share > 0 else 0
        self.entries: list[FrameEntry] = []
        self._reserved = 0
        self.done = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def convert(self, frame: av.VideoFrame) -> tuple[np.ndarray, Letterbox | None]:
        return to_rgb(frame)

    async def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)

    async def stop(self, timeout: float = 0.0) -> bool:
        for camera_id in list(self._tasks):
            await self.detach(camera_id)
        return True

    def keeps_pictures(self) -> bool:
        return False

    def attach(self, camera_id: str, slot: LatestFrameSlot[Frame], priority: int = 0) -> None:
        self._tasks[camera_id] = asyncio.create_task(self._take(camera_id, slot), name=f"collect-{camera_id}")

    async def detach(self, camera_id: str, why: Detached = Detached.stopped) -> None:
        await cancel_and_wait(self._tasks.pop(camera_id, None))

    async def _take(self, camera_id: str, slot: LatestFrameSlot[Frame]) -> None:
        while self._reserved < self.count:
            frame = await slot.get()
            if self._reserved >= self.count:
                return  # another camera filled the set while this one waited
            index = self._reserved
            self._reserved += 1  # a place in the set, before the file is written
            held_out = self.held_out_every and index % self.held_out_every == self.held_out_every - 1
            entry = FrameEntry(
                file=f"{camera_id}-{frame.seq:06d}.jpg",
                camera=camera_id,
                pts=round(frame.pts, 6),
                captured_at=round(frame.captured_at, 6),
                width=frame.width,
                height=frame.height,
                split="held_out" if held_out else "calibration",
            )
            try:
                await run_in_thread(partial(write_jpeg, frame.image, self.out_dir / entry.file), name="jpeg")
            except OSError:
                self._reserved -= 1
                raise
            # Only a frame whose file is complete enters the manifest.
            self.entries.append(entry)
            if len(self.entries) >= self.count:
                self.done.set()
                return
            await asyncio.sleep(self.interval_s)
            slot.take()  # start the next wait from a fresh frame, not one that waited


async def collect(
    config: StreamsConfig, out_dir: Path, count: int, interval_s: float, held_out_share: float, timeout_s: float
) -> list[FrameEntry]:
    """Run the cameras until `count` frames are kept (or the timeout), write the manifest."""
    if not config.enabled_cameras:
        raise InputError("no enabled cameras in the configuration")
    collector = _Collector(out_dir, count, interval_s, held_out_share)
    supervisor = Supervisor(Metrics(), collector)
    await collector.start()
    await supervisor.apply(config)
    start = time.monotonic()
    try:
        await asyncio.wait_for(collector.done.wait(), timeout_s)
    except TimeoutError:
        log.warning("collected %d of %d frames in %.0fs", len(collector.entries), count, timeout_s)
    finally:
        await supervisor.stop()
        await collector.stop()
    entries = collector.entries[:count]
    save_manifest(out_dir, entries, held_out_share)
    cameras = sorted({e.camera for e in entries})
    log.info(
        "%d frames from %d camera(s) in %.0fs: %d for calibration, %d held out",
        len(entries),
        len(cameras),
        time.monotonic() - start,
        sum(e.split == "calibration" for e in entries),
        sum(e.split == "held_out" for e in entries),
    )
    return entries
