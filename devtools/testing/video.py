"""Test and demo videos, made by the project itself with PyAV's bundled libx264.

The RTSP test server and the benchmarks need H.264 that looks like a camera: a fixed
frame rate, no B-frames, a keyframe every second, and content that changes every frame
(a slow pan) so the decoder does real work. With a photo the pan moves across it;
without one a synthetic scene is drawn, so tests never need the shared assets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

# How far beyond the output frame the source is scaled, so there is room to pan.
_PAN_MARGIN = 1.15


@dataclass(frozen=True)
class VideoSpec:
    """What a test video looks like; its hash names the cached file."""

    width: int = 1920
    height: int = 1080
    fps: int = 25
    seconds: float = 10.0
    image: str | None = None  # a photo to pan across; None draws a synthetic scene
    bitrate_kbps: int = 3000
    pan: bool = True  # False: a fixed camera looking at the whole picture

    def cache_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        stem = Path(self.image).stem if self.image else "synthetic"
        return f"{stem}-{self.width}x{self.height}-{self.fps}fps-{digest.hexdigest()[:10]}.mkv"


def _load_rgb(path: str, width: int, height: int) -> np.ndarray:
    with av.open(path) as container:
        frame = next(container.decode(video=0))
        image: np.ndarray = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
        return image


def _synthetic_scene(width: int, height: int) -> np.ndarray:
    """A textured scene: gradients and a grid, so motion costs real bits to encode."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(x / 37.0)
    green = 128 + 100 * np.cos(y / 23.0)
    blue = 255 * ((x // 64 + y // 64) % 2)
    scene: np.ndarray = np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)
    return scene


def _pan_offset(index: int, frames: int, span: int) -> int:
    # A triangle wave: out and back, so the end of the clip meets its start when looped.
    phase = index / max(frames, 1)
    return round(span * (1 - abs(1 - 2 * phase)))


def make_video(spec: VideoSpec, path: Path) -> Path:
    """Encode `spec` to a Matroska file at `path` (H.264, yuv420p, no B-frames)."""
    margin = _PAN_MARGIN if spec.pan else 1.0
    big_w = int(math.ceil(spec.width * margin / 2) * 2)
    big_h = int(math.ceil(spec.height * margin / 2) * 2)
    scene = _load_rgb(spec.image, big_w, big_h) if spec.image else _synthetic_scene(big_w, big_h)
    frames = max(1, round(spec.seconds * spec.fps))

    def pictures() -> Iterator[np.ndarray]:
        for index in range(frames):
            dx = _pan_offset(index, frames, big_w - spec.width)
            dy = _pan_offset(index, frames, big_h - spec.height)
            yield scene[dy : dy + spec.height, dx : dx + spec.width]

    return encode_h264(pictures(), path, spec.width, spec.height, spec.fps, spec.bitrate_kbps)


def encode_h264(
    pictures: Iterable[np.ndarray], path: Path, width: int, height: int, fps: int, bitrate_kbps: int
) -> Path:
    """RGB pictures to a Matroska file as a camera sends them: H.264, yuv420p, a keyframe
    a second, no B-frames; written beside `path` and renamed, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.mkv")
    with av.open(str(partial), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate_kbps * 1000
        stream.codec_context.gop_size = fps
        stream.codec_context.max_b_frames = 0
        stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, fps)
        for index, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    partial.replace(path)
    return path


def cached_video(spec: VideoSpec, cache_dir: Path) -> Path:
    """The video for `spec`, encoded once and kept in `cache_dir`."""
    path = cache_dir / spec.cache_name()
    if not path.exists():
        log.info("encoding test video %s", path.name)
        make_video(spec, path)
    return path
