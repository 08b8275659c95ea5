"""Candidate planes from the canonical model -> faces in the cameras' own pixels.

Score threshold, greedy non-maximum suppression, a cap on faces per image, then the
inverse letterbox, for a whole batch at once: every step is a NumPy operation over all
the batch's candidates, so what an image costs does not grow with the number of NumPy
calls made for it. Images without a candidate above the threshold (most frames of most
cameras) cost one share of one scan of the score planes and nothing more.

NMS looks only at pairs within one image (the IoU matrix's diagonal blocks, upper half:
each candidate against the lower-scoring ones of its image), as flat index arrays; a
crowd of hundreds of faces costs one vectorised pass and a loop of cheap row lookups,
not K^2 Python steps. Memory per pass is bounded (`_PAIRS_PER_PASS`): images are taken
in groups whose pairs fit, an image bigger than that alone.

The thresholds' defaults are the `postprocess` section's (`PostprocessConfig`, where
they are documented); at most 3000 candidates go into NMS.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from streamd.config.schema import PostprocessConfig
from streamd.frames.letterbox import Letterbox
from streamd.model.canonical import LANDMARKS, SCORE_COLUMN

_PAIRS_PER_PASS = 1 << 20
_DEFAULTS = PostprocessConfig()


@dataclass(frozen=True)
class PostprocessSettings:
    score_threshold: float = _DEFAULTS.score_threshold
    iou_threshold: float = _DEFAULTS.iou_threshold
    max_faces: int = _DEFAULTS.max_faces
    max_candidates: int = 3000

    @classmethod
    def of(cls, config: PostprocessConfig) -> PostprocessSettings:
        return cls(config.score_threshold, config.iou_threshold, config.max_faces)


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


@dataclass(frozen=True)
class BatchFaces:
    """The faces of a batch's images, all in one `Faces`, image by image: image i's are
    rows `bounds[i]:bounds[i + 1]`."""

    faces: Faces
    bounds: list[int]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def of(self, image: int) -> Faces:
        rows = slice(self.bounds[image], self.bounds[image + 1])
        return Faces(self.faces.boxes[rows], self.faces.scores[rows], self.faces.landmarks[rows])

    def records(self, decimals: int = 1) -> list[list[dict[str, Any]]]:
        """Each image's faces as records (rounded and converted for the batch at once)."""
        every = self.faces.as_records(decimals)
        return [every[start:stop] for start, stop in pairwise(self.bounds)]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of x1y1x2y2 boxes [..., 4], broadcast against each other."""
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.maximum(width, 0, out=width) * np.maximum(height, 0, out=height)
    area_a = np.maximum(a[..., 2] - a[..., 0], 0) * np.maximum(a[..., 3] - a[..., 1], 0)
    area_b = np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)
    union = area_a + area_b - inter
    # Boxes without area have no overlap: 0 / tiny, not 0 / 0.
    iou: np.ndarray = inter / np.maximum(union, np.finfo(np.float32).tiny)
    return iou


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of [K, 4] x1y1x2y2 boxes."""
    return _iou(boxes[:, None, :], boxes[None, :, :])


def postprocess(planes: np.ndarray, box: Letterbox, settings: PostprocessSettings) -> Faces:
    """`planes`: one image's [15, N] canonical output."""
    return postprocess_batch(planes[np.newaxis], [box], settings).of(0)


def postprocess_batch(planes: np.ndarray, boxes: Sequence[Letterbox], settings: PostprocessSettings) -> BatchFaces:
    """`planes`: a batch's [B, 15, N] canonical output, `boxes`: how its first len(boxes)
    images were letterboxed."""
    images = len(boxes)
    # One scan of the batch's score planes, then the few candidates above the threshold
    # as [K, 15] rows, image by image. (flatnonzero and divmod: 2-D nonzero is 15 times slower.)
    hits = np.flatnonzero(planes[:images, SCORE_COLUMN] >= settings.score_threshold)
    if not len(hits):
        return BatchFaces(_NO_FACES, [0] * (images + 1))
    image_of, anchor = np.divmod(hits, planes.shape[2])
    candidates, image_of = _at_most(planes[image_of, :, anchor], image_of, settings.max_candidates)
    # Best first within each image, so NMS needs no reordering and keeps a prefix selection.
    order = np.lexsort((-candidates[:, SCORE_COLUMN], image_of))
    ranked, image_of = candidates[order], image_of[order]
    half = ranked[:, 2:4] / 2
    corners = np.concatenate([ranked[:, 0:2] - half, ranked[:, 0:2] + half], axis=1)
    kept = np.concatenate(
        [start + _greedy(corners[start:stop], image_of[start:stop], settings) for start, stop in _passes(image_of)]
    )
    chosen, chosen_image = ranked[kept], image_of[kept]
    # Both box corners and the five landmarks are (x, y) points: back to source pixels at once.
    points = _to_source(
        np.concatenate([corners[kept], chosen[:, LANDMARKS]], axis=1).reshape(-1, 7, 2), chosen_image, boxes
    )
    faces = Faces(boxes=points[:, :2].reshape(-1, 4), scores=chosen[:, SCORE_COLUMN].copy(), landmarks=points[:, 2:])
    return BatchFaces(faces, np.searchsorted(chosen_image, np.arange(images + 1)).tolist())


def _at_most(candidates: np.ndarray, image_of: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` candidates per image, the best scoring (a crowd or a broken model)."""
    counts = np.bincount(image_of)
    if counts.max() <= limit:
        return candidates, image_of
    keep = np.ones(len(image_of), dtype=bool)
    starts = np.cumsum(counts) - counts
    for image in np.flatnonzero(counts > limit):
        start = starts[image]
        scores = candidates[start : start + counts[image], SCORE_COLUMN]
        keep[start + np.argpartition(-scores, limit)[limit:]] = False
    return candidates[keep], image_of[keep]


def _passes(image_of: np.ndarray) -> Iterator[tuple[int, int]]:
    """Ranges of candidates, whole images, whose pairs within images fit one pass."""
    start = stop = pairs = 0
    for count in np.bincount(image_of).tolist():
        if count and stop > start and pairs + count * count > _PAIRS_PER_PASS:
            yield start, stop
            start, pairs = stop, 0
        stop += count
        pairs += count * count
    yield start, stop


def _greedy(corners: np.ndarray, image_of: np.ndarray, settings: PostprocessSettings) -> np.ndarray:
    """Greedy suppression over candidates sorted by image, then best first: the positions kept."""
    count = len(corners)
    positions = np.arange(count)
    boundaries = np.flatnonzero(np.diff(image_of)) + 1
    segment = np.zeros(count, dtype=np.int64)
    segment[boundaries] = 1
    segment = np.cumsum(segment)
    ends = np.append(boundaries, count)[segment]
    # Each candidate's pairs with the lower-scoring candidates of its image.
    partners = ends - positions - 1
    first = np.repeat(positions + 1 - (np.cumsum(partners) - partners), partners)
    other = np.arange(len(first)) + first
    this = np.repeat(positions, partners)
    over = _iou(corners[this], corners[other]) > settings.iou_threshold
    this, other = this[over], other[over]
    per_image = np.bincount(segment)
    if not len(this) and per_image.max() <= settings.max_faces:
        return positions  # nothing overlaps: every candidate is a face
    suppressed = np.zeros(count, dtype=bool)
    links = np.searchsorted(this, np.arange(count + 1)).tolist()
    kept_in = [0] * len(per_image)
    keep = []
    for position, image in enumerate(segment.tolist()):
        if suppressed[position] or kept_in[image] >= settings.max_faces:
            continue
        keep.append(position)
        kept_in[image] += 1
        if links[position] < links[position + 1]:
            suppressed[other[links[position] : links[position + 1]]] = True
    return np.array(keep, dtype=np.int64)


def _to_source(points: np.ndarray, image_of: np.ndarray, boxes: Sequence[Letterbox]) -> np.ndarray:
    """Model-input pixel coordinates [K, P, 2] of the images' points -> source pixels,
    clipped to each picture."""
    geometry = np.array([(b.pad_x, b.pad_y, b.scale, b.source_width, b.source_height) for b in boxes], np.float32)
    own = geometry[image_of][:, np.newaxis, :]
    out: np.ndarray = (points - own[..., 0:2]) / own[..., 2:3]
    # minimum/maximum, not np.clip: its Python wrapper costs more than the work here.
    np.maximum(out, 0, out=out)
    np.minimum(out, own[..., 3:5], out=out)
    return out


_NO_FACES = Faces(
    boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32), landmarks=np.zeros((0, 5, 2), np.float32)
)
