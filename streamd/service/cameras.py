"""Supervisor: owns the set of cameras and applies configurations to it as a diff.

Added cameras start, removed ones stop, changed ones restart, untouched ones are not
touched. It wires parts together and does none of their work: each camera's frames go
to its slot, and the slot is handed to the frame consumer (the analysis stage).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import av

from streamd.base.failures import Failures
from streamd.camera.placement import DecoderPlacement
from streamd.camera.slot import LatestFrameSlot
from streamd.camera.source import CameraSource
from streamd.camera.state import Detached
from streamd.config.schema import CameraConfig, StreamsConfig
from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox
from streamd.metrics.registry import Metrics

log = logging.getLogger(__name__)


class FrameConsumer(Protocol):
    """What the supervisor needs of the stage that takes frames out of the cameras' slots."""

    def convert(self, frame: av.VideoFrame) -> tuple[Any, Letterbox | None]:
        """The pixels this consumer needs from a sampled frame (runs in decode threads)."""
        ...

    def keeps_pictures(self) -> bool:
        """Whether sampled frames should carry their decoded picture (best-face crops at
        the camera's resolution); asked per frame, in decode threads."""
        ...

    def attach(self, camera_id: str, slot: LatestFrameSlot[Frame], priority: int = 0) -> None: ...

    async def detach(self, camera_id: str, why: Detached) -> None:
        """Stop taking the camera's frames. `why` is `removed`: what it counted goes too
        (frames of it still in flight are then not counted); otherwise (a stop, a restart)
        its frames in flight are counted as usual."""
        ...


class AnalysisStage(FrameConsumer, Protocol):
    """A frame consumer with a life of its own: the daemon starts and stops it."""

    async def start(self) -> None: ...

    async def stop(self, timeout: float) -> bool:
        """Finish within `timeout`; False when something was lost."""
        ...


@dataclass(frozen=True)
class ConfigDiff:
    added: list[CameraConfig]
    removed: list[str]
    changed: list[CameraConfig]
    unchanged: list[str]


def diff_cameras(running: dict[str, CameraConfig], wanted: list[CameraConfig]) -> ConfigDiff:
    wanted_by_id = {camera.id: camera for camera in wanted}
    return ConfigDiff(
        added=[c for c in wanted if c.id not in running],
        removed=[cid for cid in running if cid not in wanted_by_id],
        changed=[c for c in wanted if c.id in running and running[c.id] != c],
        unchanged=[c.id for c in wanted if c.id in running and running[c.id] == c],
    )


class Supervisor:
    def __init__(
        self,
        metrics: Metrics,
        consumer: FrameConsumer,
        failures: Failures | None = None,
        placement: DecoderPlacement | None = None,
    ) -> None:
        self.metrics = metrics
        self.consumer = consumer
        self.failures = failures or Failures()
        self.placement = placement or DecoderPlacement(None)
        self._sources: dict[str, CameraSource] = {}

    def sources(self) -> list[CameraSource]:
        return list(self._sources.values())

    async def apply(self, config: StreamsConfig) -> ConfigDiff:
        """Make the running cameras match `config`'s enabled cameras of this instance's shard."""
        running = {cid: source.camera for cid, source in self._sources.items()}
        diff = diff_cameras(running, config.cameras_to_run)
        await asyncio.gather(*(self._stop_camera(cid, Detached.removed) for cid in diff.removed))
        await asyncio.gather(*(self._stop_camera(camera.id, Detached.restarted) for camera in diff.changed))
        starting = [self._new_camera(camera) for camera in [*diff.added, *diff.changed]]
        # Placed before they start, so each first connection uses the planned decoder.
        self.placement.replan(self.sources())
        for source in starting:
            source.start()
        if diff.added or diff.removed or diff.changed:
            log.info(
                "cameras: %d added, %d removed, %d changed, %d unchanged",
                len(diff.added),
                len(diff.removed),
                len(diff.changed),
                len(diff.unchanged),
            )
        return diff

    async def stop(self, timeout: float | None = None) -> bool:
        """Stop every camera, side by side, within `timeout` (a camera still busy
        connecting is left behind: it has no frames to lose)."""
        await asyncio.gather(*(self._stop_camera(cid, Detached.stopped, timeout) for cid in list(self._sources)))
        return True

    def _new_camera(self, camera: CameraConfig) -> CameraSource:
        slot: LatestFrameSlot[Frame] = LatestFrameSlot(asyncio.get_running_loop())
        source = CameraSource(
            camera,
            slot,
            self.metrics.camera(camera.id),
            self.consumer.convert,
            failures=self.failures,
            keep_picture=self.consumer.keeps_pictures,
        )
        self._sources[camera.id] = source
        self.consumer.attach(camera.id, slot, camera.priority)
        return source

    async def _stop_camera(self, camera_id: str, why: Detached, timeout: float | None = None) -> None:
        source = self._sources.pop(camera_id)
        await source.stop(timeout)
        await self.consumer.detach(camera_id, why)
        if why is Detached.removed:
            self.metrics.forget_camera(camera_id)
        log.info("[%s] stopped", camera_id)
