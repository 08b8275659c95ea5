"""Letterbox a decoded frame into the model input, and remember how to undo it.

Colour conversion and resize happen in one libswscale pass (PyAV `reformat`), straight
from the decoder's YUV, as upstream YOLOv5 letterboxes: keep the aspect ratio, scale to
fit, centre, pad with grey 114. Downscaling uses area averaging (upstream uses
cv2.INTER_AREA there), upscaling bilinear.

libswscale's default fast path is off by about two levels in limited range (measured:
Y=235 white came out as 253, mid-grey 126 as 126 instead of 128), so it runs with
accurate rounding and full horizontal chroma interpolation. That costs about 0.6 ms
more per sampled 1080p frame and makes the CPU agree with the standard, and with the
GPU kernel's arithmetic (`streamd.gpu.resample`), to a mean of under 0.1 level.
The matrix and range come from `streamd.frames.colour`, the same decision the GPU path uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from streamd.base.errors import InputError
from streamd.frames.colour import colour_of
from streamd.model.canonical import PAD_VALUE

# libswscale flags (libswscale/swscale.h); PyAV passes an integer `interpolation` through.
_SWS_BILINEAR = 0x2
_SWS_AREA = 0x20
_SWS_FULL_CHR_H_INT = 0x2000
_SWS_ACCURATE_RND = 0x40000
_SHRINK = _SWS_AREA | _SWS_FULL_CHR_H_INT | _SWS_ACCURATE_RND
_GROW = _SWS_BILINEAR | _SWS_FULL_CHR_H_INT | _SWS_ACCURATE_RND


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source picture was placed in the model input."""

    scale: float
    pad_x: int
    pad_y: int
    source_width: int
    source_height: int


def letterbox_geometry(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int, Letterbox]:
    """The resized size and the placement of a `width` x `height` picture in the target."""
    scale = min(target_width / width, target_height / height)
    new_width = max(1, min(target_width, round(width * scale)))
    new_height = max(1, min(target_height, round(height * scale)))
    pad_x = (target_width - new_width) // 2
    pad_y = (target_height - new_height) // 2
    return new_width, new_height, Letterbox(scale, pad_x, pad_y, width, height)


def letterbox(frame: av.VideoFrame, target_width: int, target_height: int) -> tuple[np.ndarray, Letterbox]:
    """`frame` as a target-sized RGB uint8 array, letterboxed, plus the transform."""
    new_width, new_height, box = letterbox_geometry(frame.width, frame.height, target_width, target_height)
    colour = colour_of(frame)
    resized = frame.reformat(
        width=new_width,
        height=new_height,
        format="rgb24",
        interpolation=_SHRINK if box.scale < 1 else _GROW,
        src_colorspace=colour.matrix.swscale_colorspace,
        src_color_range=colour.swscale_range,
        # One thread: the parallelism comes from the cameras. PyAV makes a scaler per
        # frame, and its default (one slice thread per core) started and joined threads
        # for every frame: measured at 1080p -> 640x360, 4.6 ms of CPU a frame against 3.4.
        threads=1,
    )
    canvas = np.full((target_height, target_width, 3), PAD_VALUE, dtype=np.uint8)
    canvas[box.pad_y : box.pad_y + new_height, box.pad_x : box.pad_x + new_width] = resized.to_ndarray()
    return canvas, box


def load_image(path: str) -> av.VideoFrame:
    """The first picture of an image (or video) file, decoded by FFmpeg."""
    with av.open(path) as container:
        for frame in container.decode(video=0):
            return frame
    raise InputError(f"{path}: no picture in the file")
