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
    width = np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
    height = np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None)
    inter = width * height
    union = area[:, None] + area - inter
    iou: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices kept by greedy NMS, best first, at most `limit`."""
    order = np.argsort(-scores, kind="stable")
    overlaps = iou_matrix(boxes[order]) > iou_threshold
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        suppressed |= overlaps[i]
    return order[np.array(keep, dtype=np.int64)]


def postprocess(rows: np.ndarray, box: Letterbox, settings: PostprocessSettings) -> Faces:
    """`rows`: one image's [N, 15] canonical output."""
    # Row numbers, then a take: indexing the [N, 15] rows with a boolean mask directly
    # costs twice as much (measured: 144 against 66 us for 25,200 candidates).
    candidates = rows[np.flatnonzero(rows[:, SCORE_COLUMN] >= settings.score_threshold)]
    if len(candidates) > settings.max_candidates:
        top = np.argpartition(-candidates[:, SCORE_COLUMN], settings.max_candidates)[: settings.max_candidates]
        candidates = candidates[top]
    centre, size = candidates[:, 0:2], candidates[:, 2:4]
    corners = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    kept = nms(corners, candidates[:, SCORE_COLUMN], settings.iou_threshold, settings.max_faces)
    chosen = candidates[kept]
    boxes = box.to_source(corners[kept].reshape(-1, 2, 2)).reshape(-1, 4)
    landmarks = box.to_source(chosen[:, LANDMARKS].reshape(-1, 5, 2))
    return Faces(boxes=boxes, scores=chosen[:, SCORE_COLUMN].copy(), landmarks=landmarks)
