"""The GPU letterbox's arithmetic, defined once in NumPy.

The CUDA kernel (`streamd.gpu.preprocess`) does no geometry of its own: it reads the
tap tables made here. `letterbox_reference` runs the same taps with the same float32
operations in the same order, so the kernel can be checked against it on a GPU (and
is, at start), and the reference can be checked against the CPU path (libswscale)
anywhere, which is how the GPU path is proven on machines without one.

Resampling, per axis, in source pixels per output pixel (`ratio`):
- shrinking (ratio > 1): area averaging. Output pixel i covers the source interval
  [i*ratio, (i+1)*ratio); each source pixel weighs by its overlap. Small faces in a
  1080p frame are averaged into the 640 input, not aliased away as point sampling
  would. libswscale's AREA filter with accurate rounding computes the same.
- growing (ratio <= 1): bilinear, centre-aligned.
Chroma (NV12/P010: interleaved U/V at half resolution in both axes) uses the same
rules at half the ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from streamd.frames.colour import YuvColour
from streamd.frames.letterbox import Letterbox, letterbox_geometry
from streamd.model.canonical import PAD_VALUE


@dataclass(frozen=True, eq=False)
class AxisTaps:
    """For each output index: the first source index and the weight of each tap (zero-padded)."""

    start: np.ndarray
    """int32 [outputs]"""
    weights: np.ndarray
    """float32 [outputs, taps]; each row sums to 1."""

    @property
    def count(self) -> int:
        return int(self.weights.shape[1])


def axis_taps(source_length: int, outputs: int, ratio: float) -> AxisTaps:
    """Taps mapping `outputs` samples onto a plane axis of `source_length` samples."""
    index = np.arange(outputs, dtype=np.float64)
    if ratio > 1.0:
        low = index * ratio
        high = np.minimum((index + 1) * ratio, source_length)
        start = np.floor(low).astype(np.int64)
        taps = math.ceil(ratio) + 1
        source = start[:, None] + np.arange(taps)[None, :]
        overlap = np.minimum(high[:, None], source + 1) - np.maximum(low[:, None], source)
        weights = np.clip(overlap, 0.0, None)
    else:
        centre = np.clip((index + 0.5) * ratio - 0.5, 0.0, source_length - 1.0)
        start = np.floor(centre).astype(np.int64)
        fraction = centre - start
        weights = np.stack([1.0 - fraction, fraction], axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    return AxisTaps(start.astype(np.int32), weights.astype(np.float32))


@dataclass(frozen=True, eq=False)
class LetterboxPlan:
    """Everything about one source size -> one model input size, computed once."""

    box: Letterbox
    out_width: int
    out_height: int
    new_width: int
    new_height: int
    luma_width: int
    luma_height: int
    chroma_width: int
    chroma_height: int
    luma_x: AxisTaps
    luma_y: AxisTaps
    chroma_x: AxisTaps
    chroma_y: AxisTaps


@lru_cache(maxsize=64)
def plan_letterbox(
    width: int, height: int, out_width: int, out_height: int, chroma_width: int = 0, chroma_height: int = 0
) -> LetterboxPlan:
    """The plan for a `width` x `height` picture; chroma planes default to half size, rounded up."""
    chroma_width = chroma_width or (width + 1) // 2
    chroma_height = chroma_height or (height + 1) // 2
    new_width, new_height, box = letterbox_geometry(width, height, out_width, out_height)
    ratio_x, ratio_y = width / new_width, height / new_height
    return LetterboxPlan(
        box=box,
        out_width=out_width,
        out_height=out_height,
        new_width=new_width,
        new_height=new_height,
        luma_width=width,
        luma_height=height,
        chroma_width=chroma_width,
        chroma_height=chroma_height,
        luma_x=axis_taps(width, new_width, ratio_x),
        luma_y=axis_taps(height, new_height, ratio_y),
        chroma_x=axis_taps(chroma_width, new_width, ratio_x / 2),
        chroma_y=axis_taps(chroma_height, new_height, ratio_y / 2),
    )


def _samples(plane: np.ndarray) -> np.ndarray:
    """8-bit samples as they are; 16-bit (P010/P016: the value in the high bits) scaled to 8-bit units."""
    if plane.dtype == np.uint16:
        return plane.astype(np.float32) / np.float32(256.0)
    return plane.astype(np.float32)


def _resample(plane: np.ndarray, taps_y: AxisTaps, taps_x: AxisTaps) -> np.ndarray:
    # Same order as the kernel: for each vertical tap, a horizontal weighted sum, then
    # accumulate. float32 throughout, so the two agree to the last bit or nearly.
    rows_available, columns_available = plane.shape
    columns = [np.minimum(taps_x.start + t, columns_available - 1) for t in range(taps_x.count)]
    total = np.zeros((len(taps_y.start), len(taps_x.start)), np.float32)
    for ty in range(taps_y.count):
        rows = plane[np.minimum(taps_y.start + ty, rows_available - 1)]
        horizontal = np.zeros_like(total)
        for tx in range(taps_x.count):
            horizontal += taps_x.weights[:, tx][None, :] * rows[:, columns[tx]]
        total += taps_y.weights[:, ty][:, None] * horizontal
    return total


def letterbox_reference(plan: LetterboxPlan, y: np.ndarray, uv: np.ndarray, colour: YuvColour) -> np.ndarray:
    """NV12 or P010 planes -> the [out_height, out_width, 3] uint8 model input, as the kernel computes it.

    `y` is [H, W], `uv` is [H/2, W/2, 2] (interleaved U, V), both uint8 or both uint16.
    """
    luma = _samples(y)
    chroma = _samples(uv)
    y_s = _resample(luma, plan.luma_y, plan.luma_x)
    u_s = _resample(chroma[..., 0], plan.chroma_y, plan.chroma_x) - np.float32(128.0)
    v_s = _resample(chroma[..., 1], plan.chroma_y, plan.chroma_x) - np.float32(128.0)
    y_scale, y_offset, rv, gu, gv, bu = (np.float32(c) for c in colour.rgb_coefficients())
    level = y_scale * (y_s - y_offset)
    red = level + rv * v_s
    green = level + gu * u_s + gv * v_s
    blue = level + bu * u_s
    rgb = np.stack([red, green, blue], axis=-1)
    resized = np.clip(rgb + np.float32(0.5), 0.0, 255.0).astype(np.uint8)  # truncation: round half up
    canvas = np.full((plan.out_height, plan.out_width, 3), PAD_VALUE, np.uint8)
    box = plan.box
    canvas[box.pad_y : box.pad_y + plan.new_height, box.pad_x : box.pad_x + plan.new_width] = resized
    return canvas
