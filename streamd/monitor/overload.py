"""Overload: when cameras offer more frames than the engine analyses, who gives way.

Without `overload.degrade` the batcher alone decides (higher priority first, equal
priorities in turn), and the frames it cannot take are replaced in their slots or
dropped as stale, all counted. That costs decode-side work for nothing: every sampled
frame is converted (letterboxed) before it is dropped.

With `overload.degrade`, the governor watches, once a second, how many frames were
sampled and how many analysed. When more than `_OVERLOAD_SHARE` of them were lost for
`after_s`, it lowers the sampled rate of the lowest-priority cameras by what the engine
could not take (never below `min_fps`), moving up a priority only when the lower ones
are all at their floor. The analysed rate seen during overload is remembered as the
engine's capacity; when nothing has been lost for `after_s` and raising a rate would
fit under that capacity, the highest-priority lowered cameras get part of their rate
back; after three times `after_s` of calm the capacity is measured afresh by raising
anyway (if that overloads again, the rate comes down again). Each camera's current
rate is `streamd_sampling_fps` and `fps_sampling` in `/status`; `streamd_overload` is 1
while frames are being lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamd.base.failures import Failures
from streamd.base.tasks import cancel_and_wait
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig, OverloadConfig
from streamd.metrics.registry import Metrics

log = logging.getLogger(__name__)

_TICK_S = 1.0
# Frames lost (sampled but not analysed) above this share mean overload; below the
# calm share, the engine keeps up. Between the two nothing changes.
_OVERLOAD_SHARE = 0.05
_CALM_SHARE = 0.01
# Shed this much more than was lost, so one step usually suffices.
_SHED_MARGIN = 1.1
# A raise must fit under this share of the capacity measured during overload.
_RAISE_HEADROOM = 0.9
# Each raise gives a lowered camera back this share of its configured rate.
_RAISE_STEP = 0.25
# Calm for this many `after_s` and the measured capacity is no longer trusted.
_PROBE_AFTER = 3


class _SampledCount(Protocol):
    sampled: int


class GovernedCamera(Protocol):
    """What the governor reads and sets of a camera (a CameraSource)."""

    @property
    def camera_id(self) -> str: ...

    @property
    def camera(self) -> CameraConfig: ...

    @property
    def run(self) -> CameraRun: ...

    @property
    def metrics(self) -> _SampledCount: ...


@dataclass
class _Totals:
    at: float
    sampled: int
    analysed: int


class OverloadGovernor:
    def __init__(
        self,
        settings: Callable[[], OverloadConfig],
        sources: Callable[[], Sequence[GovernedCamera]],
        analysed: Callable[[str], int],
        metrics: Metrics,
        failures: Failures | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.analysed = analysed
        self.metrics = metrics
        self.failures = failures or Failures()
        self.clock = clock
        self.capacity_fps: float | None = None
        """Frames per second the engine analysed while frames were being lost."""
        self._last: dict[str, _Totals] = {}
        self._overloaded_since: float | None = None
        self._calm_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = self.failures.watch(asyncio.create_task(self._run(), name="overload"), "overload")

    async def stop(self, _timeout: float = 0.0) -> bool:
        await cancel_and_wait(self._task)
        self._task = None
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            self.step()

    def step(self) -> None:
        """Measure the last tick and act on it (the loop calls this once a second)."""
        now = self.clock()
        settings = self.settings()
        sources = self.sources()
        sampled_fps, analysed_fps = self._measure(sources, now)
        lost = 1.0 - analysed_fps / sampled_fps if sampled_fps > 0 else 0.0
        overloaded = lost > _OVERLOAD_SHARE
        self.metrics.overload.set(1.0 if overloaded else 0.0)
        if not settings.degrade:
            self._restore_all(sources)
            return
        if overloaded:
            self.capacity_fps = analysed_fps
            self._calm_since = None
            self._overloaded_since = self._overloaded_since or now
            if now - self._overloaded_since >= settings.after_s:
                self._lower(sources, settings, sampled_fps - analysed_fps)
                self._overloaded_since = now
        elif lost < _CALM_SHARE:
            self._overloaded_since = None
            self._calm_since = self._calm_since or now
            calm_for = now - self._calm_since
            if calm_for >= _PROBE_AFTER * settings.after_s:
                # The capacity seen during overload may be stale (the engine got faster,
                # a camera went away): try a raise; if it overloads, it is measured again.
                self.capacity_fps = None
            if calm_for >= settings.after_s and self._raise(sources, sampled_fps):
                self._calm_since = now

    def _measure(self, sources: Sequence[GovernedCamera], now: float) -> tuple[float, float]:
        """Sampled and analysed frames per second over the last tick, all cameras together."""
        sampled = analysed = 0
        span = 0.0
        current: dict[str, _Totals] = {}
        for source in sources:
            totals = _Totals(now, source.metrics.sampled, self.analysed(source.camera_id))
            current[source.camera_id] = totals
            before = self._last.get(source.camera_id)
            if before is not None:
                sampled += totals.sampled - before.sampled
                analysed += totals.analysed - before.analysed
                span = max(span, now - before.at)
        self._last = current
        if span <= 0:
            return 0.0, 0.0
        return sampled / span, analysed / span

    def _lower(self, sources: Sequence[GovernedCamera], settings: OverloadConfig, lost_fps: float) -> None:
        shed = lost_fps * _SHED_MARGIN
        for priority in sorted({s.camera.priority for s in sources}):
            if shed <= 0:
                return
            level = [s for s in sources if s.camera.priority == priority]
            room = [(s, s.run.fps - min(settings.min_fps, s.camera.fps)) for s in level]
            available = sum(spare for _, spare in room if spare > 0)
            if available <= 0:
                continue
            cut = min(shed, available)
            for source, spare in room:
                if spare > 0:
                    source.run.fps -= spare * cut / available
            shed -= cut
            log.warning(
                "overload: the engine analyses %.1f frames/s; sampling of %d camera(s) of priority %d lowered "
                "(now %s fps)",
                self.capacity_fps or 0.0,
                len(level),
                priority,
                ", ".join(f"{s.camera_id} {s.run.fps:.2f}" for s in level),
            )

    def _raise(self, sources: Sequence[GovernedCamera], sampled_fps: float) -> bool:
        """Give the highest-priority lowered cameras part of their rate back, if it fits."""
        lowered = [s for s in sources if s.run.fps < s.camera.fps]
        if not lowered:
            return False
        top = max(s.camera.priority for s in lowered)
        level = [s for s in lowered if s.camera.priority == top]
        steps = [(s, min(s.camera.fps - s.run.fps, s.camera.fps * _RAISE_STEP)) for s in level]
        wanted = sampled_fps + sum(step for _, step in steps)
        if self.capacity_fps is not None and wanted > _RAISE_HEADROOM * self.capacity_fps:
            return False  # it would only overload the engine again
        for source, step in steps:
            source.run.fps += step
        log.info(
            "overload eased: sampling of %d camera(s) of priority %d raised (now %s fps)",
            len(level),
            top,
            ", ".join(f"{s.camera_id} {s.run.fps:.2f}" for s in level),
        )
        return True

    @staticmethod
    def _restore_all(sources: Sequence[GovernedCamera]) -> None:
        for source in sources:
            source.run.fps = source.camera.fps
