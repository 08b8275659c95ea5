"""A region of a decoded picture as RGB, at the camera's resolution, without converting
the rest of the picture.

A best-face crop needs a face's worth of pixels, not a 1080p RGB copy (6 MB) each time a
track's best sighting improves: for 4:2:0 frames (what cameras send) the region is cut
from the planes in place, without a copy of the frame, and only it is converted, with
the same matrix and range as the letterbox (`streamd.frames.colour`). Other layouts go
through libswscale whole.
"""

from __future__ import annotations

import av
import numpy as np

from streamd.frames.colour import colour_of

_PLANAR_420 = ("yuv420p", "yuvj420p")


def picture_region(frame: av.VideoFrame, left: int, top: int, right: int, bottom: int) -> tuple[np.ndarray, int, int]:
    """The RGB pixels of `frame` in [left, right) x [top, bottom) (clipped to the picture),
    and where they start: (pixels, left, top). The start may move up or left by one pixel
    to the chroma grid."""
    width, height = frame.width, frame.height
    left, top = max(0, left) & ~1, max(0, top) & ~1
    right, bottom = min(width, right), min(height, bottom)
    if right <= left or bottom <= top:
        return np.zeros((0, 0, 3), np.uint8), left, top
    if frame.format.name not in _PLANAR_420:
        whole = frame.reformat(format="rgb24", threads=1).to_ndarray()
        return np.ascontiguousarray(whole[top:bottom, left:right]), left, top
    luma = _plane(frame, 0, height)[top:bottom, left:right].astype(np.float32)
    rows, columns = slice(top // 2, (bottom + 1) // 2), slice(left // 2, (right + 1) // 2)
    chroma_height = (height + 1) // 2
    u = _plane(frame, 1, chroma_height)[rows, columns].astype(np.float32) - 128.0
    v = _plane(frame, 2, chroma_height)[rows, columns].astype(np.float32) - 128.0
    # Each chroma sample covers two by two luma samples (nearest: a crop, not a resample).
    u = u.repeat(2, axis=0).repeat(2, axis=1)[: bottom - top, : right - left]
    v = v.repeat(2, axis=0).repeat(2, axis=1)[: bottom - top, : right - left]
    y_scale, y_offset, rv, gu, gv, bu = colour_of(frame).rgb_coefficients()
    level = y_scale * (luma - y_offset)
    rgb = np.stack([level + rv * v, level + gu * u + gv * v, level + bu * u], axis=-1)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), left, top


def _plane(frame: av.VideoFrame, index: int, rows: int) -> np.ndarray:
    """Plane `index` as a rows x line-size view of the frame's own buffer (no copy)."""
    plane = frame.planes[index]
    view: np.ndarray = np.frombuffer(memoryview(plane), np.uint8)[: rows * plane.line_size]
    return view.reshape(rows, plane.line_size)
