"""The TensorRT backend: what can be checked without a GPU here, and a GPU test that skips."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from streamd.config.loader import parse_config
from streamd.engine.base import EngineError
from streamd.engine.cache import EngineCache, Profile, engine_cache_key
from streamd.engine.factory import create_engines
from streamd.engine.tensorrt_backend import is_qdq_model
from tests.support.environment import gpu_missing

SHA = "a" * 64


def test_cache_key_changes_with_model_gpu_tensorrt_and_profile() -> None:
    base = engine_cache_key(SHA, "NVIDIA A10", "10.13.0", Profile())
    assert base == engine_cache_key(SHA, "NVIDIA A10", "10.13.0", Profile(1, 16, 32))
    others = {
        engine_cache_key("b" * 64, "NVIDIA A10", "10.13.0", Profile()),
        engine_cache_key(SHA, "NVIDIA H100 80GB HBM3", "10.13.0", Profile()),
        engine_cache_key(SHA, "NVIDIA A10", "11.0.0", Profile()),
        engine_cache_key(SHA, "NVIDIA A10", "10.13.0", Profile(1, 8, 32)),
    }
    assert base not in others and len(others) == 4


def test_cache_path_follows_the_model_bytes(tmp_path: Path) -> None:
    model = tmp_path / "face.onnx"
    model.write_bytes(b"version 1")
    cache = EngineCache(tmp_path / "cache")
    first = cache.plan_path(model, "GPU", "10.13.0", Profile())
    model.write_bytes(b"version 2")
    second = cache.plan_path(model, "GPU", "10.13.0", Profile())
    assert first.name.startswith("face-") and first.suffix == ".plan" and first != second


def test_profile_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(1, 64, 32)
    with pytest.raises(Exception, match=r"engine.profile: needs min <= opt <= max, got 4/2/8"):
        parse_config("engine: {model: x.onnx, profile: {min: 4, opt: 2, max: 8}}", "s.yaml", env={})


def tiny_model(path: Path, quantized: bool) -> Path:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    initializers = []
    if quantized:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ]
        initializers = [
            helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("z", TensorProto.INT8, [], [0]),
        ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_qdq_models_are_recognised(tmp_path: Path) -> None:
    assert is_qdq_model(tiny_model(tmp_path / "q.onnx", quantized=True))
    assert not is_qdq_model(tiny_model(tmp_path / "f.onnx", quantized=False))


def tensorrt_missing() -> str | None:
    return gpu_missing("tensorrt")


@pytest.mark.skipif(tensorrt_missing() is None, reason="TensorRT runs here; this checks a machine without it")
def test_backend_tensorrt_without_it_is_a_clear_error_and_auto_picks_onnxruntime(
    canonical_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(f"engine: {{model: {canonical_model}, backend: tensorrt}}\ncameras: []", "s.yaml", env={})
    assert config.engine is not None
    with pytest.raises(EngineError, match="tensorrt"):
        create_engines(config.engine, 1)
    caplog.set_level(logging.INFO)
    auto = parse_config(f"engine: {{model: {canonical_model}}}\ncameras: []", "s.yaml", env={})
    assert auto.engine is not None
    engines = create_engines(auto.engine, 1).instances
    assert engines and all(engine.name == "onnxruntime" for engine in engines)
    assert "engine.backend auto: ONNX Runtime, because TensorRT cannot run here" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(tensorrt_missing() is not None, reason=str(tensorrt_missing()))
def test_tensorrt_engine_matches_onnxruntime(canonical_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    from streamd.analysis.postprocess import PostprocessSettings, postprocess
    from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
    from streamd.engine.tensorrt_backend import TensorRtEngine
    from streamd.frames.letterbox import letterbox, load_image

    image, box = letterbox(load_image(str(assets_dir / "images" / "group9.jpg")), 640, 640)
    batch = np.stack([image] * 4)
    reference = OnnxRuntimeEngine(canonical_model, max_batch=4, providers=["CPUExecutionProvider"]).infer(batch)
    engine = TensorRtEngine(canonical_model, 4, Profile(1, 4, 8), tmp_path / "cache")
    rows = engine.infer(batch)
    assert rows.shape == reference.shape
    ours = postprocess(rows[0], box, PostprocessSettings())
    theirs = postprocess(reference[0], box, PostprocessSettings())
    assert len(ours) == len(theirs) == 8
    assert np.allclose(np.sort(ours.scores), np.sort(theirs.scores), atol=0.02)  # FP16 where TensorRT 10 allows
