"""How good a sighting of a face is, for keeping the best one of a track.

quality = score x size x frontal x sharpness, each in [0, 1]:

- score: the detector's confidence;
- size: the face's shorter side in the camera's pixels over `FULL_SIZE_PX` (capped at
  1): a face-recognition chip is 112 px, and a face much smaller than that has less to
  give it;
- frontal: 1 - 2 x |nose - eyes' midpoint| / eye distance, horizontally (capped to
  [0, 1]): the nose sits between the eyes when the face looks at the camera, and
  under an eye at about 45 degrees of yaw;
- sharpness: the variance of the Laplacian of the face in the model input (grey
  levels) over `SHARP_VARIANCE` (capped at 1): motion blur and defocus flatten it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FULL_SIZE_PX = 112.0
SHARP_VARIANCE = 150.0


def frontal(landmarks: list[list[float]]) -> float:
    """1 for a face looking at the camera, falling to 0 at about 45 degrees of yaw."""
    (left_x, _), (right_x, _), (nose_x, _) = landmarks[0], landmarks[1], landmarks[2]
    eyes = abs(right_x - left_x)
    if eyes <= 0:
        return 0.0
    return float(np.clip(1.0 - 2.0 * abs(nose_x - (left_x + right_x) / 2) / eyes, 0.0, 1.0))


def sharpness(grey: np.ndarray) -> float:
    """The Laplacian's variance over `SHARP_VARIANCE`, capped at 1; 0 for a patch under 3x3."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    patch = grey.astype(np.float32)
    laplacian = patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:] - 4.0 * patch[1:-1, 1:-1]
    return min(1.0, float(laplacian.var()) / SHARP_VARIANCE)


def quality(face: dict[str, Any], grey_patch: np.ndarray) -> float:
    """The sighting's quality (see the module doc); `grey_patch`: the face in the model input."""
    x1, y1, x2, y2 = face["box"]
    size = min(1.0, float(min(x2 - x1, y2 - y1)) / FULL_SIZE_PX)
    return round(float(face["score"]) * size * frontal(face["landmarks"]) * sharpness(grey_patch), 4)


def model_input_patch(image: Any, box: list[float], scale: float, pad_x: int, pad_y: int) -> np.ndarray:
    """The face's box in the model input (camera pixels mapped through the letterbox), grey."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (round(v * scale + pad) for v, pad in zip(box, (pad_x, pad_y, pad_x, pad_y), strict=True))
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    if x2 <= x1 or y2 <= y1:
        return np.zeros((0, 0), np.uint8)
    patch = image[y1:y2, x1:x2]
    if not isinstance(patch, np.ndarray):  # a CuPy array: the GPU letterbox; only the patch comes back
        patch = patch.get()
    return np.asarray(patch[..., 0] * 0.299 + patch[..., 1] * 0.587 + patch[..., 2] * 0.114, dtype=np.float32)
