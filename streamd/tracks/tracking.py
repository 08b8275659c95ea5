"""Every camera's tracks, fed from the engine's deliver thread, a batch at a time.

Faces get their `track` in the frame records before the records go to the sinks;
`track_started` events go with them. A track that ends (lost, its camera stopped or
restarted, the tracking settings reloaded, the daemon stopping) goes to the crop store,
which writes its best face and then hands its `track_ended` event to the sinks.
Cameras are attached and detached from the event loop while the deliver thread
observes: one lock covers the table of cameras.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from streamd.base.failures import Failures
from streamd.config.schema import TrackingConfig
from streamd.frames.face_crop import FaceCrop
from streamd.frames.frame import Frame
from streamd.metrics.registry import Metrics
from streamd.recognition.stage import Recognition
from streamd.tracks.crops import CropStore
from streamd.tracks.tracker import CameraTracks, Track

Record = dict[str, Any]


class Tracking:
    def __init__(
        self,
        settings: TrackingConfig,
        emit: Callable[[list[Record]], None],
        metrics: Metrics,
        failures: Failures | None = None,
        recognition: Callable[[Callable[[Record, FaceCrop | None], None]], Recognition] | None = None,
    ) -> None:
        """`emit` hands events to the sinks (from the deliver thread and the crop store's).
        `recognition(ended)` makes the second stage, which hands each ended track's event
        to `ended` once its identity is in it (None: no recognition)."""
        self.settings = settings
        self.emit = emit
        self.metrics = metrics
        self._lock = threading.Lock()
        self._attached: set[str] = set()  # every camera sending frames, tracked or not
        self._cameras: dict[str, CameraTracks] = {}
        # Per camera for the daemon's life: a restarted camera's tracks go on numbering.
        self._ids: dict[str, itertools.count[int]] = {}
        if settings.enabled:
            # Loaded here, with the engine, off the event loop: the library brings SciPy and
            # OpenCV (0.7 s, 70 MB), which a first camera's attach must not wait for.
            import trackers  # noqa: F401

        self._events = 0
        self.crops = CropStore(settings.crops, emit, lambda reason: metrics.crops_lost.labels(reason).inc(), failures)
        self.recognition = recognition(self.crops.put) if recognition is not None else None

    def start(self) -> None:
        self.crops.start()
        if self.recognition is not None:
            self.recognition.start()

    def attach(self, camera_id: str) -> None:
        with self._lock:
            self._attached.add(camera_id)
            if self.settings.enabled and camera_id not in self._cameras:
                ids = self._ids.setdefault(camera_id, itertools.count(1))
                self._cameras[camera_id] = CameraTracks(camera_id, self.settings, ids, self.recognition)
                self.metrics.tracks_active.labels(camera_id).set(0)

    def detach(self, camera_id: str, reason: str, forget: bool = False) -> None:
        """End the camera's open tracks with `reason`; `forget`: it was removed."""
        with self._lock:
            self._attached.discard(camera_id)
            tracks = self._cameras.pop(camera_id, None)
            ended = tracks.end_all() if tracks is not None else []
            if tracks is not None and not forget:  # a removed camera's series are dropped with the rest
                self.metrics.tracks_active.labels(camera_id).set(0)
        if forget:
            self.crops.forget(camera_id)
        self._end(camera_id, ended, reason)

    def update(self, settings: TrackingConfig) -> None:
        """Reloaded settings: every camera's open tracks end (`reload`) and tracking goes on
        under the new ones (ids continue)."""
        if settings == self.settings:
            return
        with self._lock:
            cameras = sorted(self._attached)
        for camera_id in cameras:
            self.detach(camera_id, "reload")
        self.settings = settings
        self.crops.settings = settings.crops
        for camera_id in cameras:  # tracking switched on starts here too
            self.attach(camera_id)

    def observe(self, analysed: list[tuple[Frame, list[Record]]]) -> list[Record]:
        """Give the faces of a batch's frames their tracks; returns the `track_started`
        events (deliver thread). Lost tracks go to the crop store."""
        if not self.settings.enabled:
            return []
        started: list[Record] = []
        ended: list[tuple[str, list[Track]]] = []
        with self._lock:
            for frame, faces in analysed:
                tracks = self._cameras.get(frame.camera_id)
                if tracks is None:  # its camera restarted while the frame was in the engine
                    for face in faces:
                        face["track"] = None
                    continue
                now_started, lost = tracks.observe(frame, faces)
                started += now_started
                if lost:
                    ended.append((frame.camera_id, lost))
                self.metrics.tracks_active.labels(frame.camera_id).set(len(tracks.open))
            self._events += len(started)  # under the lock: ends are counted from other threads
        for event in started:
            self.metrics.track_events.labels(event["camera"], "track_started").inc()
        for camera_id, lost in ended:
            self._end(camera_id, lost, "lost")
        return started

    @property
    def events(self) -> int:
        """Track events made so far, identifications included (each handed to the sinks)."""
        with self._lock:
            made = self._events
        return made + (self.recognition.identified if self.recognition is not None else 0)

    def active(self, camera_id: str) -> int:
        with self._lock:
            tracks = self._cameras.get(camera_id)
            return len(tracks.open) if tracks is not None else 0

    def expire(self, now_mono: float) -> None:
        """End the tracks not seen for `lost_after_s`, also of cameras that send no frames
        now (down, reconnecting): from the once-a-second clock, on the event loop."""
        with self._lock:
            lost = [(camera_id, tracks.lost(now_mono)) for camera_id, tracks in self._cameras.items()]
            for camera_id, tracks in self._cameras.items():
                self.metrics.tracks_active.labels(camera_id).set(len(tracks.open))
        for camera_id, ended in lost:
            self._end(camera_id, ended, "lost")

    def stop(self, timeout: float) -> bool:
        """End every open track (`stopped`) and write their crops within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            cameras = list(self._cameras)
        for camera_id in cameras:
            self.detach(camera_id, "stopped")
        answered = self.recognition.stop(timeout / 2) if self.recognition is not None else True
        return self.crops.stop(max(0.0, deadline - time.monotonic())) and answered

    def _end(self, camera_id: str, tracks: list[Track], reason: str) -> None:
        with self._lock:
            self._events += len(tracks)
        for track in tracks:
            self.metrics.track_events.labels(camera_id, "track_ended").inc()
            if self.recognition is not None:  # its identity first, then its crop, then the sinks
                self.recognition.end(track.ended(camera_id, reason), track.best_crop)
            else:
                self.crops.put(track.ended(camera_id, reason), track.best_crop)
