"""A face cut from a picture, and the same face aligned for recognition models.

The cut keeps the face with a margin at the picture's own resolution; `align` warps it
so the five landmarks fall on the ArcFace template of a 112x112 chip (the similarity
transform, rotation, uniform scale and shift, that ArcFace-style recognition models
expect), by Umeyama's least squares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from streamd.frames.letterbox import Letterbox
from streamd.frames.region import picture_region

CHIP_SIZE = 112
# Where ArcFace-style models want the eyes, nose and mouth corners of a 112x112 chip.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FaceCrop:
    """A face cut from a picture with a margin: its pixels, and its box and landmarks in them."""

    pixels: np.ndarray
    """H x W x 3 RGB uint8, the picture's own resolution."""
    landmarks: np.ndarray
    """5 x 2, in the cut's pixels."""
    box: np.ndarray
    """[x1, y1, x2, y2] of the face, in the cut's pixels."""


def crop_from_picture(
    picture: av.VideoFrame, box: list[float], landmarks: list[list[float]], margin: float
) -> FaceCrop:
    """The face in `box` (the picture's pixels) with `margin` of its size on every side,
    cut from the decoded picture at its own resolution (only the region is converted)."""
    left, top, right, bottom = _with_margin(np.asarray(box, dtype=np.float64).reshape(2, 2), margin)
    pixels, left, top = picture_region(picture, left, top, right, bottom)
    shift = np.array([left, top], dtype=np.float64)
    return FaceCrop(
        pixels, np.asarray(landmarks, dtype=np.float64) - shift, np.asarray(box, np.float64) - np.tile(shift, 2)
    )


def crop_from_model_input(image: Any, box: Letterbox, face: dict[str, Any], margin: float) -> FaceCrop:
    """The face cut from the model input: what is left of an NVDEC frame after the GPU
    letterbox (a CuPy image: only the cut comes to the host)."""
    scale, pad = box.scale, np.array([box.pad_x, box.pad_y], dtype=np.float64)
    corners = np.asarray(face["box"], dtype=np.float64).reshape(2, 2) * scale + pad
    left, top, right, bottom = _with_margin(corners, margin)
    height, width = image.shape[:2]
    left, top, right, bottom = max(0, left), max(0, top), min(width, right), min(height, bottom)
    region = image[top:bottom, left:right]
    pixels = region.get() if hasattr(region, "get") else np.array(region)
    shift = np.array([left, top], dtype=np.float64)
    landmarks = np.asarray(face["landmarks"], dtype=np.float64) * scale + pad - shift
    return FaceCrop(np.ascontiguousarray(pixels), landmarks, (corners - shift).reshape(4))


def _with_margin(corners: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """[[x1, y1], [x2, y2]] grown by `margin` of the size on every side, as whole pixels."""
    grow = (corners[1] - corners[0]) * margin
    (left, top), (right, bottom) = np.floor(corners[0] - grow), np.ceil(corners[1] + grow)
    return int(left), int(top), int(right), int(bottom)


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, shift) that maps `source`
    points onto `target` best in least squares (Umeyama's method)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    variance = (source_centred**2).sum() / len(source)
    scale = (singular * sign).sum() / variance if variance > 0 else 1.0
    shift = target_mean - scale * rotation @ source_mean
    transform: np.ndarray = np.hstack([scale * rotation, shift[:, None]])
    return transform


def align(crop: FaceCrop, size: int = CHIP_SIZE) -> np.ndarray:
    """The aligned `size` x `size` chip: the crop warped so its landmarks fall on the
    ArcFace template (bilinear; outside the crop is black)."""
    forward = similarity(crop.landmarks, ARCFACE_TEMPLATE * (size / CHIP_SIZE))
    inverse = np.linalg.inv(np.vstack([forward, [0.0, 0.0, 1.0]]))[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    source_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    source_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    pixels = crop.pixels.astype(np.float32)
    height, width = pixels.shape[:2]
    x0, y0 = np.floor(source_x).astype(int), np.floor(source_y).astype(int)
    fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < width) & (y0 + 1 < height)
    x0c, y0c = np.clip(x0, 0, max(0, width - 2)), np.clip(y0, 0, max(0, height - 2))
    x1c, y1c = np.minimum(x0c + 1, width - 1), np.minimum(y0c + 1, height - 1)
    top = pixels[y0c, x0c] * (1 - fx) + pixels[y0c, x1c] * fx
    bottom = pixels[y1c, x0c] * (1 - fx) + pixels[y1c, x1c] * fx
    chip = (top * (1 - fy) + bottom * fy) * inside[..., None]
    aligned: np.ndarray = np.clip(chip + 0.5, 0, 255).astype(np.uint8)
    return aligned
