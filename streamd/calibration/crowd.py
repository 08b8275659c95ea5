"""Crowd frames: many small faces, as mosaics or as seamless scenes at camera resolution.

INT8 and FP32 disagree first on small faces near the score threshold, and camera frames
of a lobby rarely have enough of them to show it. A crowd frame packs copies of the
given photos, each shrunk so that its faces measure `face_px` (drawn per copy from the
range) in the model input, into rows filling the frame. The frames are written with a
manifest like `calibrate collect`'s, so `calibrate quantize` can calibrate on them and
`calibrate report` can measure INT8 on them; a different seed gives different mosaics
for a held-out set.

Mosaics have seams and repeat whole photos, and a real crowd photo (about 270 faces at
2048x1150) disagreed with them: INT8 kept 0.979 recall on mosaics and 0.935 on it. So
`scene` frames are made the other way round: at a camera's resolution (1920x1080), a
photo scaled to fill the frame is the background, and faces cut from the photos (each
with a margin of hair and shoulders) are blended in with feathered elliptical edges at
random places and sizes, hundreds to a frame, none overlapping: many small faces, no
mosaic seams, letterboxed down to the model input as a camera frame is.

How large a photo's faces are, and where they are, is measured once by the FP32 model
itself, so any photo with faces works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.base.errors import InputError
from streamd.calibration.manifest import FrameEntry, save_manifest, write_jpeg
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.letterbox import letterbox, load_image
from streamd.model.canonical import PAD_VALUE, read_canonical_info


@dataclass(frozen=True)
class Photo:
    image: av.VideoFrame
    face_width: float
    """Median face width in the photo's own pixels."""
    faces: np.ndarray
    """float32 [N, 4] face boxes (x1, y1, x2, y2) in the photo's pixels."""


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
                raise InputError(f"{path}: the model finds no face in it; a crowd needs photos with faces")
            widths = faces.boxes[:, 2] - faces.boxes[:, 0]
            photos.append(Photo(image, float(np.median(widths)), faces.boxes.astype(np.float32)))
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


_SCENE_MARGIN = 0.35  # of the face's size, around it: hair, chin, a little background
_SCENE_TRIES = 4000


def _feathered_mask(height: int, width: int) -> np.ndarray:
    """An ellipse filling the box, 1 inside, falling off smoothly over its outer fifth."""
    y = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
    x = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    radius = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    return np.clip((1.0 - radius) / 0.2, 0.0, 1.0)[..., None]


def scene_frame(
    photos: list[Photo],
    width: int,
    height: int,
    face_px: tuple[float, float],
    faces_wanted: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One width x height RGB crowd scene; `face_px` is the face width range in the frame's pixels."""
    background = photos[int(rng.integers(len(photos)))].image
    cover = max(width / background.width, height / background.height)
    scaled_w, scaled_h = round(background.width * cover), round(background.height * cover)
    canvas = background.reformat(width=scaled_w, height=scaled_h, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    canvas = canvas[top : top + height, left : left + width].astype(np.float32)
    taken = np.zeros((height, width), bool)
    placed = 0
    for _ in range(_SCENE_TRIES):
        if placed >= faces_wanted:
            break
        photo = photos[int(rng.integers(len(photos)))]
        x1, y1, x2, y2 = photo.faces[int(rng.integers(len(photo.faces)))]
        margin_x, margin_y = (x2 - x1) * _SCENE_MARGIN, (y2 - y1) * _SCENE_MARGIN
        crop_x1, crop_y1 = max(0, int(x1 - margin_x)), max(0, int(y1 - margin_y))
        crop_x2 = min(photo.image.width, int(np.ceil(x2 + margin_x)))
        crop_y2 = min(photo.image.height, int(np.ceil(y2 + margin_y)))
        scale = rng.uniform(*face_px) / max(1.0, float(x2 - x1))
        tile_w, tile_h = max(2, round((crop_x2 - crop_x1) * scale)), max(2, round((crop_y2 - crop_y1) * scale))
        if tile_w >= width or tile_h >= height:
            continue
        at_x, at_y = int(rng.integers(width - tile_w)), int(rng.integers(height - tile_h))
        if taken[at_y : at_y + tile_h, at_x : at_x + tile_w].any():
            continue
        source: np.ndarray = photo.image.to_ndarray(format="rgb24")[crop_y1:crop_y2, crop_x1:crop_x2]
        tile = av.VideoFrame.from_ndarray(np.ascontiguousarray(source, dtype=np.uint8), format="rgb24")
        pixels = tile.reformat(width=tile_w, height=tile_h, interpolation="AREA").to_ndarray().astype(np.float32)
        mask = _feathered_mask(tile_h, tile_w)
        region = canvas[at_y : at_y + tile_h, at_x : at_x + tile_w]
        region[...] = region * (1.0 - mask) + pixels * mask
        taken[at_y : at_y + tile_h, at_x : at_x + tile_w] = True
        placed += 1
    scene: np.ndarray = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return scene


def _write_frames(
    kind: str,
    out_dir: Path,
    count: int,
    held_out_share: float,
    seed: int,
    size: tuple[int, int],
    make: Callable[[np.random.Generator], np.ndarray],
) -> list[FrameEntry]:
    """`count` frames of `kind` from `make` in `out_dir`, the first share held out, with a manifest."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    held_out = round(count * held_out_share)
    entries = []
    for index in range(count):
        name = f"{kind}-{seed}-{index:04d}.jpg"
        write_jpeg(make(rng), out_dir / name)
        split = "held_out" if index < held_out else "calibration"
        entries.append(FrameEntry(name, kind, float(index), 0.0, size[0], size[1], split))
    save_manifest(out_dir, entries, held_out_share)
    return entries


def _check_face_sizes(face_px: tuple[float, float]) -> None:
    if not 0 < face_px[0] <= face_px[1]:
        raise InputError(f"face sizes must satisfy 0 < low <= high, got {face_px}")


def write_scene_frames(
    model: Path,
    images: list[Path],
    out_dir: Path,
    count: int,
    held_out_share: float,
    seed: int = 0,
    face_px: tuple[float, float] = (10.0, 30.0),
    size: tuple[int, int] = (1920, 1080),
    faces_per_frame: int = 270,
) -> list[FrameEntry]:
    """`count` crowd scenes at camera resolution in `out_dir`, with a manifest. `face_px`
    is the face width in model-input pixels, as for mosaics."""
    _check_face_sizes(face_px)
    info = read_canonical_info(model)
    to_frame = max(size[0] / info.input_width, size[1] / info.input_height)  # the letterbox's scale, inverted
    in_frame = (face_px[0] * to_frame, face_px[1] * to_frame)
    photos = measure_photos(model, images)
    return _write_frames(
        "scene", out_dir, count, held_out_share, seed, size,
        lambda rng: scene_frame(photos, size[0], size[1], in_frame, faces_per_frame, rng),
    )  # fmt: skip


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
    _check_face_sizes(face_px)
    side = read_canonical_info(model).input_width  # the model's metadata; no session needed
    photos = measure_photos(model, images)
    return _write_frames(
        "crowd", out_dir, count, held_out_share, seed, (side, side), lambda rng: crowd_frame(photos, side, face_px, rng)
    )
