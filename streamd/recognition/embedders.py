"""Face embedders: a face crop in, a vector out; close vectors, the same person.

`OnnxEmbedder` runs any ArcFace-layout ONNX model (112x112 chips aligned on the five
landmarks, as `streamd.frames.face_crop.align` makes them) through ONNX Runtime, with
the best provider installed (CUDA on a GPU box).

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
from streamd.frames.face_crop import FaceCrop, align


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


class OnnxEmbedder:
    """An ArcFace-layout ONNX model: 112x112 aligned RGB chips in (NCHW or NHWC, the
    model's own layout; pixels as (x - 127.5) / 127.5, as insightface feeds its models),
    one embedding per chip out, made unit length here, so distances run from 0 to 2."""

    threshold = 1.1
    """For unit ArcFace embeddings, cosine similarity 0.4; no ArcFace model is in the
    shared assets, so this is the literature's, not measured here: set your model's."""

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        from streamd.engine.onnxruntime_backend import choose_providers

        try:
            self._session = ort.InferenceSession(str(model), providers=choose_providers(None))
        except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own kinds
            raise EmbedderError(f"{model}: cannot load the embedder: {error}") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise EmbedderError(f"{model}: an embedder has one input and an embedding output")
        shape = inputs[0].shape
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise EmbedderError(f"{model}: input {shape} is not a batch of 112x112 RGB images")
        self._input = inputs[0].name
        self._channels_first = shape[1] == 3
        self._batch = shape[0] if isinstance(shape[0], int) else None  # a fixed batch, or any
        self.name = f"onnx-{model.stem}"
        self.dimensions = outputs[0].shape[-1]

    def embed(self, crops: list[FaceCrop]) -> np.ndarray:
        if not crops:
            return np.zeros((0, int(self.dimensions) if isinstance(self.dimensions, int) else 0), np.float32)
        chips = np.stack([align(crop) for crop in crops]).astype(np.float32)
        chips = (chips - 127.5) / 127.5
        if self._channels_first:
            chips = chips.transpose(0, 3, 1, 2)
        step = self._batch or len(chips)
        rows = [self._session.run(None, {self._input: chips[i : i + step]})[0] for i in range(0, len(chips), step)]
        vectors = np.concatenate(rows).reshape(len(crops), -1).astype(np.float32)
        unit: np.ndarray = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return unit


def make_embedder(kind: str, model: Path | None = None) -> Embedder:
    """The embedder `recognition.embedder` names (`model`: the ONNX file for `onnx`)."""
    if kind == "dlib":
        return DlibEmbedder()
    if kind == "onnx" and model is not None:
        return OnnxEmbedder(model)
    raise EmbedderError(f"unknown embedder {kind!r}" if kind != "onnx" else "the onnx embedder needs recognition.model")
