"""RGB pictures to JPEG with FFmpeg's MJPEG encoder (PyAV): no image library besides."""

from __future__ import annotations

import av
import numpy as np


def encode_jpeg(picture: np.ndarray, worst_quantizer: int = 5) -> bytes:
    """`picture` (H x W x 3 RGB uint8) as a JPEG; `worst_quantizer` bounds the quality
    (2 is the best FFmpeg allows, 31 the worst). Odd sizes lose their last row or column
    (4:2:0 chroma needs even ones)."""
    height, width = picture.shape[0] & ~1, picture.shape[1] & ~1
    if height == 0 or width == 0:
        raise ValueError(f"a {picture.shape[1]}x{picture.shape[0]} picture is too small for a JPEG")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.options = {"qmin": "2", "qmax": str(worst_quantizer)}  # quantizer bounds: the quality
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[:height, :width]), format="rgb24")
    data = b"".join(bytes(packet) for packet in codec.encode(frame.reformat(format="yuvj420p")))
    data += b"".join(bytes(packet) for packet in codec.encode(None))
    return data
