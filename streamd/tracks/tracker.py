"""One camera's tracks: who is seen where, from one analysed frame to the next.

Association is the `trackers` library's ByteTrack (Roboflow's maintained home of the
tracker `supervision` used to ship): Kalman-predicted boxes matched to the frame's
faces by the Hungarian method, the confident faces first, the doubtful ones then for
the tracks left over. It is fed each analysed frame's capture time, so its motion model
and its patience are in seconds, whatever rate the camera is analysed at (overload
lowers it). At 5 fps a face crossing the picture moves several of its own widths
between two analysed frames, more than plain IoU can follow; the boxes it matches are
therefore grown around their centres (`MATCH_GROWTH`): a moving face's grown box still
overlaps its prediction, and two faces' grown boxes overlap only when they are close.
Measured by `python -m devtools.bench tracks` on clips of faces crossing at up to 300
px/s (docs/results/2026-12-05-tracks.md): matched as they are, 0.67 of a face's frames
keep its id; grown 2x, 0.96 with no switch; grown 3x and 4x, switches at crossings.

This layer adds what the library leaves to its user:
- ids: the library numbers from 1 in each tracker; here a track's id is unique per
  camera for the daemon's life, across reloads and restarts of that camera;
- confirmation: a track exists (and is announced, `track_started`) once seen in
  `min_hits` analysed frames; a face of a track not yet confirmed has `track` null;
- the end: a track not seen for `lost_after_s` ends (`track_ended`, reason `lost`), as
  do the open tracks of a camera that stops or restarts, with that as the reason;
- the best sighting, by `quality`, with its crop from the camera's own picture.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamd.config.schema import TrackingConfig
from streamd.frames.face_crop import FaceCrop, crop_from_model_input, crop_from_picture
from streamd.frames.frame import Frame
from streamd.recognition.stage import Recognition
from streamd.tracks.quality import model_input_patch, quality

Record = dict[str, Any]

MATCH_GROWTH = 2.0
"""Boxes are matched at this many times their size (see the module doc)."""
# The library's confidence split: every face the detector reports may start a track
# (the detector's own threshold already chose them); none is "low".
_ACTIVATION = 0.0


@dataclass
class Track:
    track: int
    first_pts: float
    first_at: float
    last_pts: float
    last_at: float
    last_mono: float
    frames: int = 0
    best: Record = field(default_factory=dict)
    best_crop: FaceCrop | None = None
    asked: int = 0
    """Early sightings sent to recognition so far, the last at `asked_mono`."""
    asked_mono: float = float("-inf")

    def started(self, camera_id: str) -> Record:
        return {
            "event": "track_started",
            "camera": camera_id,
            "track": self.track,
            "frame_pts": self.best["frame_pts"],
            "captured_at": self.best["captured_at"],
            "box": self.best["box"],
            "score": self.best["score"],
        }

    def ended(self, camera_id: str, reason: str) -> Record:
        return {
            "event": "track_ended",
            "camera": camera_id,
            "track": self.track,
            "reason": reason,
            "first_pts": self.first_pts,
            "last_pts": self.last_pts,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "frames": self.frames,
            "best": {**self.best, "crop": None, "chip": None},
        }


class CameraTracks:
    def __init__(
        self,
        camera_id: str,
        settings: TrackingConfig,
        ids: itertools.count[int],
        recognition: Recognition | None = None,
    ) -> None:
        """`recognition`: where the track's early best sightings go to be identified."""
        self.camera_id = camera_id
        self.settings = settings
        self.recognition = recognition
        self._ids = ids
        self._tracker = association(settings)
        self._ours: dict[int, int] = {}  # the library's id -> ours
        self.open: dict[int, Track] = {}

    def observe(self, frame: Frame, faces: list[Record]) -> tuple[list[Record], list[Track]]:
        """Give each face its `track`; returns the tracks started and those that ended (lost)."""
        import supervision as sv

        started: list[Record] = []
        boxes = np.array([face["box"] for face in faces], dtype=np.float32).reshape(-1, 4)
        detections = sv.Detections(
            xyxy=_grown(boxes, MATCH_GROWTH),
            confidence=np.array([face["score"] for face in faces], dtype=np.float32),
            data={"face": np.arange(len(faces))},
        )
        result = self._tracker.update(detections, timestamp=frame.clock_s)
        for face in faces:
            face["track"] = None
        # An empty result is the library's fresh `Detections.empty()`, without our data.
        indices = result.data.get("face", np.zeros(0, int)) if len(result) else np.zeros(0, int)
        tracker_ids = result.tracker_id if result.tracker_id is not None else np.zeros(0, int)
        for index, library_id in zip(indices, tracker_ids, strict=True):
            if library_id < 0:
                continue
            face = faces[int(index)]
            ours = self._ours.get(int(library_id))
            if ours is None:
                ours = self._ours[int(library_id)] = next(self._ids)
            face["track"] = ours
            track = self.open.get(ours)
            confirmed_now = track is None
            if track is None:  # confirmed after `min_hits` sightings: those before count too
                at, mono = frame.captured_at, frame.clock_s
                track = self.open[ours] = Track(ours, frame.pts, at, frame.pts, at, mono, self.settings.min_hits - 1)
            self._sighting(track, frame, face)
            if confirmed_now:
                started.append(track.started(self.camera_id))
        return started, self.lost(frame.clock_s)

    def end_all(self) -> list[Track]:
        ended, self.open, self._ours = list(self.open.values()), {}, {}
        return ended

    def _sighting(self, track: Track, frame: Frame, face: Record) -> None:
        track.frames += 1
        track.last_pts, track.last_at, track.last_mono = frame.pts, frame.captured_at, frame.clock_s
        patch = np.zeros((0, 0), np.float32)
        if frame.letterbox is not None:
            box = frame.letterbox
            patch = model_input_patch(frame.image, face["box"], box.scale, box.pad_x, box.pad_y)
        score = quality(face, patch)
        if track.best and score <= track.best["quality"]:
            return
        track.best = {
            "frame_pts": frame.pts,
            "captured_at": frame.captured_at,
            "box": face["box"],
            "score": face["score"],
            "landmarks": face["landmarks"],
            "quality": score,
        }
        recognition = self.recognition
        if not self.settings.crops.enabled and recognition is None:
            return
        margin = self.settings.crops.margin
        if frame.picture is not None:
            track.best_crop = crop_from_picture(frame.picture, face["box"], face["landmarks"], margin)
        elif frame.letterbox is not None:  # an NVDEC frame: only the model input is left
            track.best_crop = crop_from_model_input(frame.image, frame.letterbox, face, margin)
        asking = recognition is not None and recognition.wants(track.asked, track.asked_mono, frame.clock_s)
        if asking and recognition is not None and track.best_crop is not None:
            track.asked, track.asked_mono = track.asked + 1, frame.clock_s
            recognition.ask(self.camera_id, track.track, track.best_crop)

    def lost(self, now_mono: float) -> list[Track]:
        """The tracks not seen for `lost_after_s` by `now_mono`, closed."""
        lost = [t for t in self.open.values() if now_mono - t.last_mono > self.settings.lost_after_s]
        for track in lost:
            del self.open[track.track]
        if lost:
            gone = {track.track for track in lost}
            self._ours = {theirs: ours for theirs, ours in self._ours.items() if ours not in gone}
        return lost


def association(settings: TrackingConfig) -> Any:
    """The library's tracker for one camera (the benchmark swaps in others to compare)."""
    from trackers import ByteTrackTracker  # imported with the first camera that tracks

    return ByteTrackTracker(
        lost_track_buffer=max(1, round(settings.lost_after_s * 30)),  # the library counts 30 fps frames
        track_activation_threshold=_ACTIVATION,
        high_conf_det_threshold=_ACTIVATION,
        minimum_consecutive_frames=settings.min_hits,
        minimum_iou_threshold=settings.min_iou,
    )


def _grown(boxes: np.ndarray, factor: float) -> np.ndarray:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return np.hstack([centres - half, centres + half])
