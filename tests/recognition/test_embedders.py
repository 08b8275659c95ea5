"""The embedders at their library boundary: dlib's real model on the shared photos' faces,
and an ArcFace-layout ONNX model (a small one built here: the layout, not the accuracy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from streamd.analysis.postprocess import PostprocessSettings
from streamd.analysis.still_images import detect_images
from streamd.frames.face_crop import FaceCrop, crop_from_picture
from streamd.frames.letterbox import load_image
from streamd.recognition.embedders import DlibEmbedder, EmbedderError, OnnxEmbedder, make_embedder

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def faces(canonical_model: Path, assets_dir: Path) -> list[FaceCrop]:
    photo = str(assets_dir / "images" / "group9.jpg")
    picture = load_image(photo)
    found = detect_images([photo], canonical_model, PostprocessSettings(score_threshold=0.5))[0]["faces"]
    return [crop_from_picture(picture, f["box"], f["landmarks"], 0.25) for f in found]


def arcface_layout(path: Path, channels_first: bool, dimensions: int = 16) -> Path:
    """[N, 3, 112, 112] (or NHWC) float in, [N, dimensions] out: pooled rows times weights."""
    shape: list[str | int | None] = ["N", 3, 112, 112] if channels_first else ["N", 112, 112, 3]
    nodes = []
    source = "images"
    if not channels_first:
        nodes.append(helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]))
        source = "nchw"
    nodes += [
        helper.make_node("AveragePool", [source], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weights"], ["embedding"]),
    ]
    weights = np.random.default_rng(0).normal(size=(3 * 4 * 4, dimensions)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "arcface-layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dimensions])],
        [helper.make_tensor("weights", TensorProto.FLOAT, weights.shape, weights.flatten().tolist())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_dlib_tells_people_apart_and_a_batch_equals_its_faces_one_by_one(faces: list[FaceCrop]) -> None:
    embedder = DlibEmbedder()
    together = embedder.embed(faces)
    assert together.shape == (len(faces), 128)
    alone = np.vstack([embedder.embed([face]) for face in faces])
    assert np.allclose(together, alone, atol=1e-4)
    distances = np.linalg.norm(together[:, None] - together[None], axis=-1)[~np.eye(len(faces), dtype=bool)]
    assert distances.min() > embedder.threshold, "no two children of the photo within the threshold"


@pytest.mark.parametrize("channels_first", [True, False], ids=["NCHW", "NHWC"])
def test_an_arcface_layout_model_gives_unit_embeddings_batch_or_not(
    faces: list[FaceCrop], tmp_path: Path, channels_first: bool
) -> None:
    embedder = make_embedder("onnx", arcface_layout(tmp_path / "arc.onnx", channels_first))
    assert isinstance(embedder, OnnxEmbedder) and embedder.name == "onnx-arc"
    together = embedder.embed(faces)
    assert together.shape == (len(faces), 16)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, np.vstack([embedder.embed([face]) for face in faces]), atol=1e-5)
    assert len({tuple(np.round(row, 3)) for row in together}) == len(faces), "each face its own embedding"


def test_a_model_of_another_shape_is_refused_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "not-a-face-model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    with pytest.raises(EmbedderError, match=r"other.onnx: input \['N', 10\] is not a batch of 112x112 RGB"):
        OnnxEmbedder(path)


def test_streamd_model_embedder_checks_and_describes_either(tmp_path: Path) -> None:
    def describe(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "streamd", "model", "embedder", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    dlib = describe()
    assert dlib.returncode == 0 and dlib.stdout.startswith("dlib-resnet-v1: 128-d embeddings, threshold 0.5"), dlib
    onnx_model = describe(str(arcface_layout(tmp_path / "arc.onnx", channels_first=True)))
    assert onnx_model.returncode == 0 and onnx_model.stdout.startswith("onnx-arc: 16-d embeddings, threshold 1.1")
    missing = describe(str(tmp_path / "none.onnx"))
    assert missing.returncode != 0 and "none.onnx: cannot load the embedder" in missing.stderr
