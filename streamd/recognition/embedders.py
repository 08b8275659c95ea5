"""Face embedders: a face crop in, a vector out; close vectors, the same person.

`DlibEmbedder` is dlib's ResNet (`dlib_face_recognition_resnet_model_v1`, 128-d, the
model behind `face_recognition`), whose weights PyPI ships in `face_recognition_models`,
so the default works out of the box. dlib aligns the face itself: its 5-point shape
predictor finds the eye corners and the nose in the crop, and the model reads a 150x150
chip cut on them. Distances are Euclidean. Measured on the shared photos (ten faces of
ten people): the same face at half the size 0.12 to 0.22 from itself, different people
0.61 to 0.96 (children of one class photo are the closest), so the default threshold is
0.5, tighter than dlib's customary 0.6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from streamd.base.errors import ErrorKind, StreamdError
from streamd.frames.face_crop import FaceCrop


class EmbedderError(StreamdError):
    kind = ErrorKind.model


class Embedder(Protocol):
    name: str
    """Names the model: a gallery made with one embedder is matched only with it."""
    threshold: float
    """The distance under which two embeddings are taken for the same person."""

    def embed(self, crops: list[FaceCrop]) -> np.ndarray:
        """[len(crops), dimensions] float32, one row per crop, in order."""
        ...


class DlibEmbedder:
    name = "dlib-resnet-v1"
    threshold = 0.5

    def __init__(self) -> None:
        import dlib

        models = _models_folder()
        self._shapes = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._model = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._rectangle = dlib.rectangle
        self._detections = dlib.full_object_detections

    def embed(self, crops: list[FaceCrop]) -> np.ndarray:
        if not crops:
            return np.zeros((0, 128), np.float32)
        images, shapes = [], []
        for crop in crops:
            image = np.ascontiguousarray(crop.pixels)
            x1, y1, x2, y2 = (round(float(v)) for v in crop.box)
            found = self._detections()
            found.append(self._shapes(image, self._rectangle(x1, y1, x2, y2)))
            images.append(image)
            shapes.append(found)
        # One call for the whole batch: dlib runs its network over every chip together.
        vectors = self._model.compute_face_descriptor(images, shapes)
        return np.array([np.array(faces[0]) for faces in vectors], dtype=np.float32)


def _models_folder() -> Path:
    # Found without importing the package: its __init__ imports pkg_resources, which
    # setuptools deprecates, to name the same files.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError("the dlib embedder's weights are missing: pip install face_recognition_models")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def make_embedder(kind: str) -> Embedder:
    """The embedder `recognition.embedder` names."""
    if kind == "dlib":
        return DlibEmbedder()
    raise EmbedderError(f"unknown embedder {kind!r}")
