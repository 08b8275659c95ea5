"""Clips of real faces moving across a camera's view, with their ground truth, for tracking.

Faces are cut from the shared photos where the detector finds them and pasted on a
textured background (no faces of its own), each along its own straight path at its
own speed: entering, leaving, crossing another (the later walker passes in front),
slow and fast (50 to 300 px/s at 1280x720: at 5 fps a fast face moves 60 px, most of
its own width, between two analysed frames). Every clip starts and ends with no face
in view, so a looping camera's appearances are separate.

The ground truth is each walker's face box at any time, and whether it is visible:
at least `_INSIDE` of it in the picture and at most `_HIDDEN` of it covered by a walker
drawn later (its patch: the face and the margin around it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from devtools.testing.demo import shared_image
from devtools.testing.video import encode_h264
from streamd.analysis.postprocess import PostprocessSettings
from streamd.analysis.still_images import detect_images

Box = tuple[float, float, float, float]

_INSIDE = 0.7
_HIDDEN = 0.5
_PATCH_MARGIN = 0.2
PHOTOS = ("group9.jpg", "two_people.jpg")


@dataclass(frozen=True)
class Walker:
    face: int
    """Which face patch (index into `face_patches`)."""
    start_s: float
    end_s: float
    start: tuple[float, float]
    """Where the face's box has its top-left corner at `start_s`, pixels."""
    velocity: tuple[float, float]
    """Pixels a second."""
    face_height: int
    """The face box's height in the picture, pixels."""

    def at(self, t: float) -> tuple[float, float]:
        elapsed = t - self.start_s
        return self.start[0] + self.velocity[0] * elapsed, self.start[1] + self.velocity[1] * elapsed

    @property
    def speed(self) -> float:
        return math.hypot(*self.velocity)


@dataclass(frozen=True)
class Scene:
    name: str
    walkers: tuple[Walker, ...]
    width: int = 1280
    height: int = 720
    fps: int = 25
    seconds: float = 12.0


@dataclass(frozen=True)
class FacePatch:
    pixels: np.ndarray
    """The face with a margin, RGB."""
    box: Box
    """The face's box in `pixels`."""


def _walker(face: int, t0: float, t1: float, y: float, speed: float, height: int, width: int = 1280) -> Walker:
    """Across the picture at height `y`, left to right (speed > 0) or right to left, in view from t0 to t1."""
    face_width = height * 0.8
    start_x = -face_width if speed > 0 else width
    span = (width + face_width) / abs(speed)
    return Walker(face, t0, min(t1, t0 + span), (start_x, y), (speed, 0.0), height)


SCENES = (
    Scene(
        "crossing",
        (
            _walker(0, 0.5, 11.5, 150, 300, 100),
            _walker(1, 1.0, 11.5, 165, -200, 96),  # crosses the first near t = 3.5 s, passing in front
            Walker(2, 0.6, 11.0, (150, 420), (50, 10), 110),
            Walker(3, 2.0, 8.8, (880, -120), (0, 120), 90),
            _walker(4, 5.0, 11.4, 560, -80, 104),
            _walker(5, 6.5, 11.5, 300, 250, 92),
        ),
    ),
    Scene(
        "passing",
        (
            _walker(6, 0.5, 11.5, 200, 150, 100),
            _walker(7, 0.8, 11.5, 240, -150, 100),  # head-on, overlapping at mid-picture
            _walker(8, 3.0, 11.5, 460, 280, 96),
            _walker(9, 3.6, 11.5, 470, 280, 94),  # two one behind the other at the same speed
            Walker(1, 1.5, 10.5, (1100, 600), (-60, -35), 108),
        ),
    ),
    Scene(
        "small-and-fast",  # faces narrower than the distance they move between analysed frames
        (
            _walker(2, 0.5, 11.5, 120, 300, 56),
            _walker(3, 0.7, 11.5, 130, -300, 52),
            _walker(4, 2.5, 11.5, 330, 250, 60),
            _walker(5, 2.6, 11.5, 400, 200, 50),
            _walker(0, 5.0, 11.5, 560, -280, 58),
            Walker(9, 6.0, 11.3, (300, -70), (90, 160), 54),
        ),
    ),
)


def visible(scene: Scene, t: float) -> list[tuple[int, Box]]:
    """The walkers whose faces are in view at `t`, with their face boxes."""
    boxes: list[tuple[int, Box]] = []
    for index, walker in enumerate(scene.walkers):
        if walker.start_s <= t <= walker.end_s:
            x, y = walker.at(t)
            boxes.append((index, (x, y, x + walker.face_height * 0.8, y + walker.face_height)))
    shown = []
    for order, (index, box) in enumerate(boxes):
        inside = _area(_clip(box, scene.width, scene.height)) / _area(box)
        covered = max(
            (_overlap(box, _grow(later, _PATCH_MARGIN)) / _area(box) for _, later in boxes[order + 1 :]), default=0.0
        )
        if inside >= _INSIDE and covered <= _HIDDEN:
            shown.append((index, box))
    return shown


def face_patches(model: Path) -> list[FacePatch]:
    """Every face the detector finds in the shared photos, cut with a margin."""
    patches = []
    for name in PHOTOS:
        photo = shared_image(name)
        if photo is None:
            raise FileNotFoundError(f"shared photo {name} is missing")
        with av.open(str(photo)) as container:
            pixels = next(container.decode(video=0)).to_ndarray(format="rgb24")
        faces = detect_images([str(photo)], str(model), PostprocessSettings(score_threshold=0.5))[0]["faces"]
        for face in sorted(faces, key=lambda f: f["box"][0]):
            x1, y1, x2, y2 = face["box"]
            grow_x, grow_y = (x2 - x1) * _PATCH_MARGIN, (y2 - y1) * _PATCH_MARGIN
            left, top = max(0, int(x1 - grow_x)), max(0, int(y1 - grow_y))
            right = min(pixels.shape[1], int(x2 + grow_x))
            bottom = min(pixels.shape[0], int(y2 + grow_y))
            patches.append(FacePatch(pixels[top:bottom, left:right].copy(), (x1 - left, y1 - top, x2 - left, y2 - top)))
    return patches


def render(scene: Scene, patches: list[FacePatch], t: float, background: np.ndarray) -> np.ndarray:
    picture = background.copy()
    for walker in scene.walkers:
        if not walker.start_s <= t <= walker.end_s:
            continue
        patch = patches[walker.face % len(patches)]
        bx1, by1, bx2, by2 = patch.box
        # Scaled so the face's box is the walker's (width 0.8 of its height): the truth is exact.
        scale_x, scale_y = walker.face_height * 0.8 / (bx2 - bx1), walker.face_height / (by2 - by1)
        width = max(2, round(patch.pixels.shape[1] * scale_x))
        height = max(2, round(patch.pixels.shape[0] * scale_y))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(patch.pixels), format="rgb24")
        resized = frame.reformat(width=width, height=height).to_ndarray()
        face_x, face_y = walker.at(t)
        left, top = round(face_x - bx1 * scale_x), round(face_y - by1 * scale_y)
        _paste(picture, resized, left, top)
    return picture


def make_clip(scene: Scene, patches: list[FacePatch], path: Path) -> Path:
    """Encode `scene` as a camera would send it: H.264, a keyframe a second, no B-frames."""
    background = _background(scene.width, scene.height)
    pictures = (
        render(scene, patches, index / scene.fps, background) for index in range(round(scene.seconds * scene.fps))
    )
    return encode_h264(pictures, path, scene.width, scene.height, scene.fps, bitrate_kbps=2000)


def _background(width: int, height: int) -> np.ndarray:
    """Soft coloured waves: texture for the encoder, nothing a face detector takes for a face."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 110 + 40 * np.sin(x / 90.0)
    green = 120 + 40 * np.cos(y / 70.0)
    blue = 130 + 30 * np.sin((x + y) / 120.0)
    background: np.ndarray = np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)
    return background


def _paste(picture: np.ndarray, patch: np.ndarray, left: int, top: int) -> None:
    height, width = picture.shape[:2]
    x1, y1 = max(0, left), max(0, top)
    x2, y2 = min(width, left + patch.shape[1]), min(height, top + patch.shape[0])
    if x2 > x1 and y2 > y1:
        picture[y1:y2, x1:x2] = patch[y1 - top : y2 - top, x1 - left : x2 - left]


def _grow(box: Box, share: float) -> Box:
    """`box` with `share` of its size added on every side: where a walker's patch is."""
    grow_x, grow_y = (box[2] - box[0]) * share, (box[3] - box[1]) * share
    return (box[0] - grow_x, box[1] - grow_y, box[2] + grow_x, box[3] + grow_y)


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def _clip(box: Box, width: int, height: int) -> Box:
    return (max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3]))


def _overlap(a: Box, b: Box) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
