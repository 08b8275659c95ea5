"""How well tracks follow the ground truth of a moving-faces clip.

Each analysed frame's faces are matched to the faces in view then (IoU at least
`MATCH_IOU`, best pairs first). Per ground-truth face (one appearance of a walker):

- switches: how often the track id of its matched faces changes from one matched
  frame to the next (a face with no track yet, `null`, is skipped);
- coverage: the share of the analysed frames it is in view in whose face carries its
  dominant track id (a missed detection counts against it, as it would for a user);
- events: the `track_started` and `track_ended` events of the track ids that are its
  own (each id belongs to the face it was matched to most).

The issue's goals: at most 0.2 switches per face, coverage at least 0.9, exactly one
started and one ended event per face.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from devtools.testing.moving_faces import Box, Scene, visible

MATCH_IOU = 0.3
Record = dict[str, Any]


@dataclass
class FaceScore:
    walker: int
    frames: int = 0
    """Analysed frames it was in view in."""
    ids: list[int | None] = field(default_factory=list)
    """The track of its matched face in each of those frames (None: missed, or no track yet)."""
    started: int = 0
    ended: int = 0

    @property
    def dominant(self) -> int | None:
        counted = Counter(track for track in self.ids if track is not None)
        return counted.most_common(1)[0][0] if counted else None

    @property
    def switches(self) -> int:
        tracked = [track for track in self.ids if track is not None]
        return sum(1 for a, b in pairwise(tracked) if a != b)

    @property
    def coverage(self) -> float:
        dominant = self.dominant
        return sum(1 for track in self.ids if track == dominant and track is not None) / max(1, self.frames)


@dataclass
class TrackScore:
    faces: list[FaceScore]
    stray_tracks: int
    """Tracks in the frames that never matched a face in view (false detections)."""

    @property
    def switches_per_face(self) -> float:
        return sum(face.switches for face in self.faces) / max(1, len(self.faces))

    @property
    def coverage(self) -> float:
        return sum(face.coverage for face in self.faces) / max(1, len(self.faces))

    @property
    def exact_events(self) -> float:
        """The share of faces with exactly one started and one ended event."""
        return sum(1 for face in self.faces if face.started == face.ended == 1) / max(1, len(self.faces))

    def line(self) -> str:
        return (
            f"faces={len(self.faces)} switches_per_face={self.switches_per_face:.2f} "
            f"coverage={self.coverage:.3f} exact_events={self.exact_events:.2f} stray_tracks={self.stray_tracks}"
        )

    @property
    def meets_goals(self) -> bool:
        return self.switches_per_face <= 0.2 and self.coverage >= 0.9 and self.exact_events == 1.0


def score(scene: Scene, frames: list[Record], events: list[Record], clip_time: Any = None) -> TrackScore:
    """Score the frame records of one camera showing `scene` once, and the events of the
    tracks in them. `clip_time(pts)` gives the clip's time of a frame (default: its
    `frame_pts`)."""
    time_of = clip_time or (lambda pts: pts)
    faces: dict[int, FaceScore] = {}
    votes: dict[int, Counter[int]] = defaultdict(Counter)  # track id -> walker -> matched frames
    for record in sorted(frames, key=lambda r: r["frame_pts"]):
        t = time_of(record["frame_pts"])
        truth = visible(scene, t)
        matched = _match(truth, [face["box"] for face in record["faces"]])
        for walker, _ in truth:
            face = faces.setdefault(walker, FaceScore(walker))
            face.frames += 1
            index = matched.get(walker)
            track: int | None = record["faces"][index].get("track") if index is not None else None
            face.ids.append(track)
            if track is not None:
                votes[track][walker] += 1
    owner = {track: counted.most_common(1)[0][0] for track, counted in votes.items()}
    seen = {face.get("track") for record in frames for face in record["faces"]} - {None}
    for event in events:
        own = owner.get(int(event["track"]))
        if own is None:
            continue
        if event["event"] == "track_started":
            faces[own].started += 1
        elif event["event"] == "track_ended":
            faces[own].ended += 1
    return TrackScore(sorted(faces.values(), key=lambda f: f.walker), len(seen - set(owner)))


def matched_faces(scene: Scene, record: Record, t: float) -> int:
    """How many of the faces in view at `t` one of `record`'s faces matches."""
    return len(_match(visible(scene, t), [face["box"] for face in record["faces"]]))


def _match(truth: list[tuple[int, Box]], boxes: list[list[float]]) -> dict[int, int]:
    pairs = sorted(
        ((_iou(box, found), walker, index) for walker, box in truth for index, found in enumerate(boxes)),
        reverse=True,
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for iou, walker, index in pairs:
        if iou < MATCH_IOU:
            break
        if walker not in matched and index not in used:
            matched[walker] = index
            used.add(index)
    return matched


def _iou(a: Box, b: list[float]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
