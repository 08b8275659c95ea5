"""Candidate rows from the canonical model -> faces in the camera's own pixels.

Score threshold, greedy non-maximum suppression, a cap on faces per frame, then the
inverse letterbox. Everything is vectorised with NumPy: the IoU of all candidate pairs
is one matrix, so a crowd of hundreds of faces costs one K x K computation and a loop of
cheap row lookups, not K^2 Python steps.

Defaults: score >= 0.3 (faces below are mostly false), NMS IoU 0.5 (upstream
yolov5-face's), at most 300 faces per frame, at most 3000 candidates into NMS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.model.canonical import LANDMARKS, SCORE_COLUMN
from streamd.preprocess import Letterbox


@dataclass(frozen=True)
class PostprocessSettings:
    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_faces: int = 300
    max_candidates: int = 3000


@dataclass(frozen=True)
class Faces:
    """K faces: boxes [K, 4] (x1, y1, x2, y2), scores [K], landmarks [K, 5, 2]; source pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def as_records(self, decimals: int = 1) -> list[dict[str, Any]]:
        boxes = np.round(self.boxes.astype(np.float64), decimals).tolist()
        landmarks = np.round(self.landmarks.astype(np.float64), decimals).tolist()
        scores = np.round(self.scores.astype(np.float64), 4).tolist()
        return [
            {"box": box, "score": score, "landmarks": marks}
            for box, score, marks in zip(boxes, scores, landmarks, strict=True)
        ]


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of [K, 4] x1y1x2y2 boxes."""
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    width = np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1)
    height = np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1)
    inter = np.maximum(width, 0, out=width) * np.maximum(height, 0, out=height)
    union = area[:, None] + area - inter
    # Boxes without area have no overlap: 0 / tiny, not 0 / 0.
    iou: np.ndarray = inter / np.maximum(union, np.finfo(np.float32).tiny)
    return iou


def _greedy(overlaps: np.ndarray, limit: int) -> np.ndarray:
    """Greedy suppression over boxes sorted best first: the positions kept."""
    suppressed = np.zeros(len(overlaps), dtype=bool)
    keep = []
    for i in range(len(overlaps)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        suppressed |= overlaps[i]
    return np.array(keep, dtype=np.int64)


_NO_FACES = Faces(
    boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32), landmarks=np.zeros((0, 5, 2), np.float32)
)


def postprocess(planes: np.ndarray, box: Letterbox, settings: PostprocessSettings) -> Faces:
    """`planes`: one image's [15, N] canonical output."""
    # One contiguous score plane, then the few candidates above the threshold as [K, 15] rows.
    candidates = planes[:, np.flatnonzero(planes[SCORE_COLUMN] >= settings.score_threshold)].T
    if len(candidates) > settings.max_candidates:
        top = np.argpartition(-candidates[:, SCORE_COLUMN], settings.max_candidates)[: settings.max_candidates]
        candidates = candidates[top]
    if not len(candidates):  # most frames of most cameras: nothing more to do
        return _NO_FACES
    # Best first, so NMS needs no reordering and the kept rows are a prefix selection.
    ranked = candidates[np.argsort(-candidates[:, SCORE_COLUMN], kind="stable")]
    half = ranked[:, 2:4] / 2
    corners = np.concatenate([ranked[:, 0:2] - half, ranked[:, 0:2] + half], axis=1)
    kept = _greedy(iou_matrix(corners) > settings.iou_threshold, settings.max_faces)
    chosen = ranked[kept]
    # Both box corners and the five landmarks are (x, y) points: back to source pixels at once.
    points = box.to_source(np.concatenate([corners[kept], chosen[:, LANDMARKS]], axis=1).reshape(-1, 7, 2))
    return Faces(boxes=points[:, :2].reshape(-1, 4), scores=chosen[:, SCORE_COLUMN].copy(), landmarks=points[:, 2:])
