"""Synthetic YUV pictures for the letterbox tests: made here, so no test needs the shared photos.

Smooth gradients, hard-edged discs and a band of one-pixel stripes: the stripes are
where point sampling and area averaging part ways, so a kernel that point-samples
cannot pass for one that averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from streamd.frames.colour import YuvColour


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    picture = np.empty((height, width, 3), np.float32)
    picture[..., 0] = 128 + 90 * np.sin(x / 51)
    picture[..., 1] = 128 + 90 * np.cos(y / 37)
    picture[..., 2] = 128 + 80 * np.sin((x + y) / 80)
    for _ in range(30):
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, height / 8)
        picture[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    band = (y > height * 0.6) & (y < height * 0.8)
    picture[band] = np.where((x[band].astype(int) % 2 == 0)[:, None], 230.0, 25.0)
    picture += rng.normal(0, 6, picture.shape)
    image: np.ndarray = np.clip(picture, 0, 255).astype(np.uint8)
    return image


@dataclass
class YuvPicture:
    frame: av.VideoFrame
    """As a CPU decoder hands it over, tagged with its colour space and range."""
    y: np.ndarray
    """[H, W] uint8"""
    uv: np.ndarray
    """[ceil(H/2), ceil(W/2), 2] uint8, interleaved as in NV12."""


def yuv_picture(width: int, height: int, colour: YuvColour, pixel_format: str = "yuv420p") -> YuvPicture:
    """The scene in YUV 4:2:0 as a camera would send it with these colour tags."""
    rgb = av.VideoFrame.from_ndarray(scene(width, height), format="rgb24")
    planar = rgb.reformat(
        format="yuvj420p" if colour.full_range and pixel_format == "yuv420p" else "yuv420p",
        dst_colorspace=colour.matrix.swscale_colorspace,
        dst_color_range=colour.swscale_range,
        interpolation="AREA",
    )
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    luma = _plane(planar, 0, width, height)
    u, v = _plane(planar, 1, chroma_w, chroma_h), _plane(planar, 2, chroma_w, chroma_h)
    uv = np.stack([u, v], axis=-1)
    if pixel_format == "nv12":
        frame = av.VideoFrame.from_ndarray(np.concatenate([luma, uv.reshape(chroma_h, chroma_w * 2)]), format="nv12")
    else:
        frame = planar
    frame.colorspace = {"bt601": 6, "bt709": 1, "bt2020": 9}[colour.matrix.name]  # AVColorSpace numbers
    frame.color_range = colour.swscale_range
    return YuvPicture(frame, luma, uv)


def _plane(frame: av.VideoFrame, index: int, width: int, height: int) -> np.ndarray:
    plane = frame.planes[index]
    rows: np.ndarray = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[:height, :width]
    return rows.copy()
