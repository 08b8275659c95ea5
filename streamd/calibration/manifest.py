"""Calibration frames on disk: JPEG files and `manifest.json` describing them.

manifest.json:
    {"version": 1, "created_at": <unix s>, "held_out_share": 0.2,
     "frames": [{"file": "cam1-000012.jpg", "camera": "cam1", "pts": 3.2,
                 "captured_at": <unix s>, "width": 1920, "height": 1080,
                 "split": "calibration" | "held_out"}, ...]}

Held-out frames never feed calibration; the report measures INT8 against FP32 on them.
Frames are stored whole (not letterboxed) so one set serves any model input size.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamd.base.errors import InputError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class FrameEntry:
    file: str
    camera: str
    pts: float
    captured_at: float
    width: int
    height: int
    split: str


def write_jpeg(image: np.ndarray, path: Path, quality: int = 2) -> None:
    """RGB uint8 [H, W, 3] -> JPEG via FFmpeg's mjpeg encoder (qscale 2: near lossless)."""
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = image.shape[1], image.shape[0]
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.options = {"qscale": str(quality)}
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    frame.pts = 0
    data = b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])
    path.write_bytes(data)


def save_manifest(directory: Path, frames: list[FrameEntry], held_out_share: float) -> Path:
    path = directory / MANIFEST
    body = {
        "version": 1,
        "created_at": time.time(),
        "held_out_share": held_out_share,
        "frames": [asdict(frame) for frame in frames],
    }
    path.write_text(json.dumps(body, indent=1))
    return path


def load_manifest(directory: Path) -> list[FrameEntry]:
    path = directory / MANIFEST
    try:
        body = json.loads(path.read_text())
        frames = [FrameEntry(**entry) for entry in body["frames"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a calibration manifest ({error})") from error
    missing = [f.file for f in frames if not (directory / f.file).is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} frame file(s) missing, e.g. {missing[0]}")
    return frames


def split(frames: list[FrameEntry], name: str) -> list[FrameEntry]:
    return [frame for frame in frames if frame.split == name]
