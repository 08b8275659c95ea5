"""Overload: when cameras offer more frames than the engine analyses, who gives way.

Without `overload.degrade` the batcher alone decides (higher priority first, equal
priorities in turn), and the frames it cannot take are replaced in their slots or
dropped as stale, all counted. That costs decode-side work for nothing: every sampled
frame is converted (letterboxed) before it is dropped.

With `overload.degrade`, the governor reads, once a second, how many frames were sampled
and how many analysed (the rate clock's measurement, `streamd.monitor.rates`). When more
than `_OVERLOAD_SHARE` of them were lost for `after_s`, it lowers the sampled rate of
the lowest-priority cameras by what the engine could not take (never below `min_fps`),
moving up a priority only when the lower ones are all at their floor. The analysed rate
seen during overload is remembered as the engine's capacity; when nothing has been lost
for `after_s` and raising a rate would fit under that capacity, the highest-priority
lowered cameras get part of their rate back; after three times `after_s` of calm the
capacity is measured afresh by raising anyway (if that overloads again, the rate comes
down again). Each camera's current rate is `streamd_sampling_fps` and `fps_sampling` in
`/status`; `streamd_overload` is 1 while frames are being lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from streamd.config.schema import CameraConfig, OverloadConfig
from streamd.metrics.registry import Metrics
from streamd.monitor.rates import Rates

log = logging.getLogger(__name__)

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


class GovernedCamera(Protocol):
    """What the governor reads of a camera (a CameraSource), and the one thing it may change."""

    @property
    def camera_id(self) -> str: ...

    @property
    def camera(self) -> CameraConfig: ...

    @property
    def sampling_fps(self) -> float: ...

    def set_sampling_fps(self, fps: float) -> None: ...


class OverloadGovernor:
    def __init__(
        self,
        settings: Callable[[], OverloadConfig],
        sources: Callable[[], Sequence[GovernedCamera]],
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.metrics = metrics
        self.capacity_fps: float | None = None
        """Frames per second the engine analysed while frames were being lost."""
        self._overloaded_since: float | None = None
        self._calm_since: float | None = None

    def on_rates(self, last_second: Mapping[str, Rates], now: float) -> None:
        """Act on the last second's rates (the rate clock calls this once a second)."""
        settings = self.settings()
        sources = self.sources()
        sampled_fps = sum(rates.sampled_fps for rates in last_second.values())
        analysed_fps = sum(rates.analysed_fps for rates in last_second.values())
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

    def _lower(self, sources: Sequence[GovernedCamera], settings: OverloadConfig, lost_fps: float) -> None:
        shed = lost_fps * _SHED_MARGIN
        for priority in sorted({s.camera.priority for s in sources}):
            if shed <= 0:
                return
            level = [s for s in sources if s.camera.priority == priority]
            room = [(s, s.sampling_fps - min(settings.min_fps, s.camera.fps)) for s in level]
            available = sum(spare for _, spare in room if spare > 0)
            if available <= 0:
                continue
            cut = min(shed, available)
            for source, spare in room:
                if spare > 0:
                    source.set_sampling_fps(source.sampling_fps - spare * cut / available)
            shed -= cut
            log.warning(
                "overload: the engine analyses %.1f frames/s; sampling of %d camera(s) of priority %d lowered "
                "(now %s fps)",
                self.capacity_fps or 0.0,
                len(level),
                priority,
                ", ".join(f"{s.camera_id} {s.sampling_fps:.2f}" for s in level),
            )

    def _raise(self, sources: Sequence[GovernedCamera], sampled_fps: float) -> bool:
        """Give the highest-priority lowered cameras part of their rate back, if it fits."""
        lowered = [s for s in sources if s.sampling_fps < s.camera.fps]
        if not lowered:
            return False
        top = max(s.camera.priority for s in lowered)
        level = [s for s in lowered if s.camera.priority == top]
        steps = [(s, min(s.camera.fps - s.sampling_fps, s.camera.fps * _RAISE_STEP)) for s in level]
        wanted = sampled_fps + sum(step for _, step in steps)
        if self.capacity_fps is not None and wanted > _RAISE_HEADROOM * self.capacity_fps:
            return False  # it would only overload the engine again
        for source, step in steps:
            source.set_sampling_fps(source.sampling_fps + step)
        log.info(
            "overload eased: sampling of %d camera(s) of priority %d raised (now %s fps)",
            len(level),
            top,
            ", ".join(f"{s.camera_id} {s.sampling_fps:.2f}" for s in level),
        )
        return True

    @staticmethod
    def _restore_all(sources: Sequence[GovernedCamera]) -> None:
        for source in sources:
            if source.sampling_fps != source.camera.fps:
                source.set_sampling_fps(source.camera.fps)
