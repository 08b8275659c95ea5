"""Crowd frames: mosaics of many downscaled copies of photos, faces 10 to 30 px.

INT8 and FP32 disagree first on small faces near the score threshold, and camera frames
of a lobby rarely have enough of them to show it. A crowd frame packs copies of the
given photos, each shrunk so that its faces measure `face_px` (drawn per copy from the
range) in the model input, into rows filling the frame. The frames are written with a
manifest like `calibrate collect`'s, so `calibrate quantize` can calibrate on them and
`calibrate report` can measure INT8 on them; a different seed gives different mosaics
for a held-out set.

How large a photo's faces are is measured once, by the FP32 model itself (the median
box width of its detections), so any photo with faces works.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from streamd.calibration.manifest import FrameEntry, save_manifest, write_jpeg
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.model.canonical import PAD_VALUE, read_canonical_info
from streamd.postprocess import PostprocessSettings, postprocess
from streamd.preprocess import letterbox, load_image


@dataclass(frozen=True)
class Photo:
    image: av.VideoFrame
    face_width: float
    """Median face width in the photo's own pixels."""


def measure_photos(model: Path, paths: list[Path]) -> list[Photo]:
    """Each photo with its median face width, as the FP32 model sees it; photos without faces are refused."""
    engine = OnnxRuntimeEngine(model, max_batch=1)
    photos = []
    try:
        for path in paths:
            image = load_image(str(path))
            letterboxed, box = letterbox(image, engine.input_width, engine.input_height)
            faces = postprocess(engine.infer(letterboxed[np.newaxis])[0], box, PostprocessSettings())
            if not len(faces):
                raise ValueError(f"{path}: the model finds no face in it; a crowd needs photos with faces")
            widths = faces.boxes[:, 2] - faces.boxes[:, 0]
            photos.append(Photo(image, float(np.median(widths))))
    finally:
        engine.close()
    return photos


_MAX_TILE_SHARE = 0.4  # a copy is at most this share of the frame's side, so many fit
_PLACEMENT_TRIES = 30


def crowd_frame(photos: list[Photo], size: int, face_px: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """One size x size RGB mosaic: shelf-packed copies of random photos at random face sizes."""
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x = y = shelf = 0
    misses = 0
    while misses < _PLACEMENT_TRIES:
        photo = photos[int(rng.integers(len(photos)))]
        largest = _MAX_TILE_SHARE * size / max(photo.image.width, photo.image.height)
        face = rng.uniform(face_px[0], max(face_px[0], min(face_px[1], largest * photo.face_width)))
        scale = face / photo.face_width
        width = max(1, round(photo.image.width * scale))
        height = max(1, round(photo.image.height * scale))
        if x + width > size:  # next shelf
            x, y, shelf = 0, y + shelf, 0
        if y + height > size or x + width > size:
            misses += 1
            continue
        tile = photo.image.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        canvas[y : y + height, x : x + width] = tile
        x, shelf = x + width, max(shelf, height)
    return canvas


def write_crowd_frames(
    model: Path,
    images: list[Path],
    out_dir: Path,
    count: int,
    held_out_share: float,
    seed: int = 0,
    face_px: tuple[float, float] = (10.0, 30.0),
) -> list[FrameEntry]:
    """`count` crowd frames (model-input sized) in `out_dir`, with a manifest; returns the entries."""
    if not 0 < face_px[0] <= face_px[1]:
        raise ValueError(f"face sizes must satisfy 0 < low <= high, got {face_px}")
    size = read_canonical_info(model).input_width  # the model's metadata; no session needed
    photos = measure_photos(model, images)
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    held_out = round(count * held_out_share)
    entries = []
    for index in range(count):
        name = f"crowd-{seed}-{index:04d}.jpg"
        write_jpeg(crowd_frame(photos, size, face_px, rng), out_dir / name)
        split = "held_out" if index < held_out else "calibration"
        entries.append(FrameEntry(name, "crowd", float(index), 0.0, size, size, split))
    save_manifest(out_dir, entries, held_out_share)
    return entries
