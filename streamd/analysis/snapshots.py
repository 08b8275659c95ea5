"""The last analysed frame of each camera, with its faces drawn, as a JPEG on request.

Nothing is copied per frame: the detector hands over the frame's model input (the
letterboxed picture it already holds) and the faces of its record, and only the last
per camera is kept, replacing the one before. The work (cutting the picture out of the
letterbox, scaling it back to the camera's size, drawing, JPEG encoding) is done only
when someone asks for `/cameras/<id>/latest.jpg`. Scaling the model input back up
costs sharpness, not truth: the boxes are drawn in the camera's pixels, where the
records put them.

A storm of requests costs one encode per analysed frame: the JPEG is kept per camera
with its frame's `seq` and served again until a newer frame is analysed, and only one
encode runs at a time (a 4K picture is 25 MB of RGB while it is drawn), so memory stays
bounded however many ask at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox

_BOX = np.array([0, 255, 0], np.uint8)  # green boxes
_LANDMARK = np.array([255, 0, 0], np.uint8)  # red landmarks
_JPEG_QUALITY = 5  # the worst quantizer allowed: 2 (best) .. 31


@dataclass(frozen=True)
class _Last:
    seq: int
    image: Any
    letterbox: Letterbox
    faces: list[dict[str, Any]]


@dataclass(frozen=True)
class Snapshot:
    seq: int
    """The frame's `seq`: its record is the one with the same camera and seq."""
    jpeg: bytes


class Snapshots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, _Last] = {}
        self._encoded: dict[str, Snapshot] = {}
        self._encoding = threading.Lock()
        self.encodes = 0
        """JPEGs encoded so far (each analysed frame at most once)."""

    def remember(self, analysed: list[tuple[Frame, list[dict[str, Any]]]]) -> None:
        """A batch's analysed frames with their faces (engine deliver thread): each one is
        its camera's latest, by reference, no copy. Frames without a letterbox (made
        outside a camera) have nothing to show."""
        with self._lock:
            for frame, faces in analysed:
                if frame.letterbox is not None:
                    self._last[frame.camera_id] = _Last(frame.seq, frame.image, frame.letterbox, faces)

    def forget(self, camera_id: str) -> None:
        with self._lock:
            self._last.pop(camera_id, None)
            self._encoded.pop(camera_id, None)

    def latest(self, camera_id: str) -> Snapshot | None:
        """The camera's last analysed frame at its own size, faces drawn; None before the first."""
        with self._lock:
            last, done = self._last.get(camera_id), self._encoded.get(camera_id)
        if last is None or (done is not None and done.seq == last.seq):
            return done if last is not None else None
        with self._encoding:  # one at a time; those who waited mostly find it done
            with self._lock:
                last, done = self._last.get(camera_id), self._encoded.get(camera_id)
            if last is None or (done is not None and done.seq == last.seq):
                return done if last is not None else None
            picture = _unletterbox(last.image, last.letterbox)
            for face in last.faces:
                _draw_face(picture, face)
            snapshot = Snapshot(last.seq, _encode_jpeg(picture))
            del picture
            self.encodes += 1
        with self._lock:
            if camera_id in self._last:  # not forgotten meanwhile
                self._encoded[camera_id] = snapshot
        return snapshot


def _unletterbox(image: Any, box: Letterbox) -> np.ndarray:
    pixels = image.get() if hasattr(image, "get") else np.asarray(image)  # a CuPy image comes down
    width = round(box.source_width * box.scale)
    height = round(box.source_height * box.scale)
    inner = np.ascontiguousarray(pixels[box.pad_y : box.pad_y + height, box.pad_x : box.pad_x + width])
    frame = av.VideoFrame.from_ndarray(inner, format="rgb24")
    resized = frame.reformat(width=box.source_width, height=box.source_height, format="rgb24")
    out: np.ndarray = resized.to_ndarray()
    return out


def _draw_face(picture: np.ndarray, face: dict[str, Any], thickness: int = 2) -> None:
    height, width = picture.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in face["box"])
    x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
    y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
    picture[y1 : y1 + thickness, x1 : x2 + 1] = _BOX
    picture[max(y1, y2 - thickness + 1) : y2 + 1, x1 : x2 + 1] = _BOX
    picture[y1 : y2 + 1, x1 : x1 + thickness] = _BOX
    picture[y1 : y2 + 1, max(x1, x2 - thickness + 1) : x2 + 1] = _BOX
    for x, y in face.get("landmarks", []):
        cx, cy = round(x), round(y)
        picture[max(0, cy - 1) : cy + 2, max(0, cx - 1) : cx + 2] = _LANDMARK


def _encode_jpeg(picture: np.ndarray) -> bytes:
    height, width = picture.shape[:2]
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuvj420p"
    codec.options = {"qmin": "2", "qmax": str(_JPEG_QUALITY)}  # quantizer bounds: the quality
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuvj420p")
    data = b"".join(bytes(packet) for packet in codec.encode(frame))
    data += b"".join(bytes(packet) for packet in codec.encode(None))
    return data
