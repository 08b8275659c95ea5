"""Health: readiness, `/status`, the systemd watchdog and STATUS line, event-loop lag.

Ready (`/readyz` 200) means: started, not stopping, no component crashed, every sink
writing, and at least `health.ready_share` of the cameras streaming. The watchdog is
pinged only while the pipeline itself is healthy (no crash, the engine not stuck):
cameras being down or a sink failing is not the daemon's fault and a restart would not
fix it, so those make `/readyz` 503 without stopping the pings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from streamd.analysis.snapshots import Snapshot
from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.camera.errors import Reason
from streamd.camera.placement import DecoderPlacement
from streamd.camera.source import CameraSource
from streamd.camera.state import CameraState
from streamd.config.loader import LoadedConfig
from streamd.metrics.registry import Metrics
from streamd.monitor.rates import RateClock
from streamd.monitor.systemd import Notifier

log = logging.getLogger(__name__)

# How often the health loop wakes: event-loop lag probe, watchdog and STATUS.
_TICK_S = 1.0


class Phase(Enum):
    starting = "starting"
    running = "running"
    stopping = "stopping"


class Watched(Protocol):
    """What health reads of the daemon it watches."""

    @property
    def phase(self) -> Phase: ...

    @property
    def loaded(self) -> LoadedConfig:
        """The configuration in force and its file."""
        ...

    def engine_stuck_s(self) -> float:
        """How long the batch in the engine has been running (0: none, or no engine)."""
        ...

    def problems(self) -> list[str]:
        """Why sinks are not writing now, the second stage is failing, or engine instances
        are out of rotation (empty while all work)."""
        ...

    def engine_status(self) -> dict[str, Any] | None:
        """The engine's instances in rotation and its settings, each `auto` one with why;
        None without an engine."""
        ...

    def snapshot(self, camera_id: str) -> Snapshot | None: ...

    def tracks_of(self, camera_id: str) -> dict[str, Any] | None:
        """`active` tracks and the tracks whose `best_faces` were written last (newest
        first); None while tracking is off."""
        ...

    def best_face(self, camera_id: str, track: int) -> bytes | None: ...


class Health:
    def __init__(
        self,
        watched: Watched,
        sources: Callable[[], list[CameraSource]],
        rates: RateClock,
        metrics: Metrics,
        notifier: Notifier,
        failures: Failures,
        placement: DecoderPlacement | None = None,
    ) -> None:
        self.watched = watched
        self.placement = placement or DecoderPlacement(None)
        self.sources = sources
        self.rates = rates
        self.metrics = metrics
        self.notifier = notifier
        self.failures = failures
        self._task: asyncio.Task[None] | None = None
        self._engine_stuck_logged = False
        self._descriptor_shortage = False

    def start(self) -> None:
        if self._task is None:
            self._task = self.failures.watch(asyncio.create_task(self._loop(), name="health"), "health")

    async def stop(self, _timeout: float = 0.0) -> bool:
        await cancel_and_wait(self._task)
        self._task = None
        return True

    async def _loop(self) -> None:
        ping_every = self.notifier.watchdog_interval_s or 5.0
        tick = min(_TICK_S, ping_every)
        last_ping = 0.0
        while True:
            expected = time.monotonic() + tick
            await asyncio.sleep(tick)
            self.metrics.event_loop_lag.set(max(0.0, time.monotonic() - expected))
            self._log_descriptor_shortage()
            now = time.monotonic()
            if now - last_ping >= ping_every:
                last_ping = now
                if self.pipeline_healthy():
                    self.notifier.watchdog()
                self.notifier.status(self.status_line())

    def _log_descriptor_shortage(self) -> None:
        """Once when cameras start failing for want of descriptors, once when it is over."""
        starved = _without_descriptors(self.sources())
        if starved and not self._descriptor_shortage:
            log.error("%s", _descriptors_message(starved))
        elif not starved and self._descriptor_shortage:
            log.warning("file descriptors available again: no camera is failing for want of them")
        self._descriptor_shortage = bool(starved)

    def pipeline_healthy(self) -> bool:
        """False when a component crashed or the engine is stuck: what a restart fixes."""
        if self.failures.failed:
            return False
        stuck = self.watched.engine_stuck_s()
        if stuck > self.watched.loaded.config.health.engine_stuck_s:
            if not self._engine_stuck_logged:
                log.error("engine stuck: a batch has been running for %.0fs; watchdog pings stopped", stuck)
                self._engine_stuck_logged = True
            return False
        self._engine_stuck_logged = False
        return True

    def status_line(self) -> str:
        sources = self.sources()
        streaming = sum(1 for s in sources if s.state is CameraState.streaming)
        analysed = self.rates.analysed_fps_total()
        return f"{streaming}/{len(sources)} cameras streaming, {analysed:.1f} frames/s analysed"

    def ready(self) -> tuple[bool, str]:
        if self.watched.phase is not Phase.running:
            return False, self.watched.phase.value
        if self.failures.failed:
            return False, f"not ready: {self.failures.describe()}"
        problems = self.watched.problems()
        if problems:
            return False, f"not ready: {'; '.join(problems)}"
        sources = self.sources()
        starved = _without_descriptors(sources)
        if starved:
            return False, f"not ready: {_descriptors_message(starved)}"
        streaming = sum(1 for s in sources if s.state is CameraState.streaming)
        share = streaming / len(sources) if sources else 1.0
        ready = share >= self.watched.loaded.config.health.ready_share
        return ready, f"{'ready' if ready else 'not ready'}: {streaming}/{len(sources)} cameras streaming"

    def snapshot(self, camera_id: str) -> Snapshot | None:
        return self.watched.snapshot(camera_id)

    def best_face(self, camera_id: str, track: int) -> bytes | None:
        return self.watched.best_face(camera_id, track)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        cameras = []
        for status in (source.status() for source in self.sources()):
            rates = self.rates.rates.get(status.camera_id)
            last = status.last_frame_mono
            cameras.append(
                {
                    "id": status.camera_id,
                    "url": status.url,
                    "state": status.state.value,
                    "reason": status.reason,
                    "message": status.message,
                    "decoder": status.decoder.value,
                    "decode_lag_s": None if status.decode_lag_s is None else round(status.decode_lag_s, 3),
                    "transport": status.transport,
                    "decode_frames": "keyframes" if status.keyframes_only else "all",
                    "priority": status.priority,
                    "fps_target": status.target_fps,
                    "fps_sampling": status.sampling_fps,
                    "decoded_fps": rates.decoded_fps if rates else None,
                    "sampled_fps": rates.sampled_fps if rates else None,
                    "analysed_fps": rates.analysed_fps if rates else None,
                    "last_frame_age_s": None if last is None else round(now - last, 3),
                    "reconnects": status.reconnects,
                    "tracks": self.watched.tracks_of(status.camera_id),
                }
            )
        ready, why = self.ready()
        loaded = self.watched.loaded
        return {
            "ready": ready,
            "summary": why,
            "config": {"path": str(loaded.path) if loaded.path else None, "sha256": loaded.sha256},
            "shard": loaded.config.shard,
            "nvdec": self._nvdec_status(),
            "engine": self.watched.engine_status(),
            "cameras": cameras,
        }

    def _nvdec_status(self) -> dict[str, Any] | None:
        """The NVDEC budget and what is placed in it; None where NVDEC is not possible."""
        budget, plan = self.placement.budget, self.placement.plan
        if budget is None or plan is None:
            return None
        return {
            "budget_fps": budget.fps,
            "budget_source": budget.source,
            "planned_fps": round(plan.planned_fps, 1),
            "cameras_placed": sorted(plan.on_nvdec),
        }


def _without_descriptors(sources: list[CameraSource]) -> list[str]:
    return [s.camera_id for s in sources if s.reason == Reason.local_resources.value]


def _descriptors_message(cameras: list[str]) -> str:
    shown = ", ".join(cameras[:5]) + (f" and {len(cameras) - 5} more" if len(cameras) > 5 else "")
    return (
        f"streamd is out of file descriptors: {len(cameras)} camera(s) cannot connect ({shown}); "
        "raise LimitNOFILE= or find what holds them"
    )
