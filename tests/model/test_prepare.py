"""`streamd model prepare` and `streamd detect` with the real shared model and photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.engine.base import EngineError
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.letterbox import letterbox, load_image
from streamd.model.canonical import ModelError, read_canonical_info
from streamd.model.prepare import prepare_model
from tests.support.faces import box_iou, export_layout_model, reference_decode, reference_faces, reference_letterbox

pytestmark = pytest.mark.assets

PHOTOS = ("group9.jpg", "two_people.jpg", "street_bus.jpg")


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference_for(raw_model: Path, image: Path) -> np.ndarray:
    tensor, ratio, left, top = reference_letterbox(image)
    heads = session(raw_model).run(None, {"data": tensor})
    return reference_faces(reference_decode([h[0:1] for h in heads]), ratio, left, top)


def assert_same_faces(ours: list[dict[str, object]], reference: np.ndarray, what: str) -> None:
    assert len(ours) == len(reference), f"{what}: {len(ours)} faces, reference {len(reference)}"
    for ref in reference:
        best = max(box_iou(np.array(face["box"]), ref[:4]) for face in ours)
        assert best >= 0.9, f"{what}: reference face {ref[:4].round(1)} matched at IoU {best:.2f}"


def test_prepared_raw_model_finds_the_same_faces_as_upstreams_decode(
    raw_model: Path, canonical_model: Path, assets_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "detect", "--model", str(canonical_model)]
        + [str(assets_dir / "images" / p) for p in PHOTOS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["image"]).name for r in records] == list(PHOTOS)
    for record in records:
        reference = reference_for(raw_model, Path(record["image"]))
        assert_same_faces(record["faces"], reference, Path(record["image"]).name)
        for face in record["faces"]:
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"]
            assert len(face["landmarks"]) == 5
            # Landmarks (eyes, nose, mouth corners) lie in or near their face box.
            for x, y in face["landmarks"]:
                assert x1 - 0.2 * (x2 - x1) <= x <= x2 + 0.2 * (x2 - x1)
                assert y1 - 0.2 * (y2 - y1) <= y <= y2 + 0.2 * (y2 - y1)
    assert len(records[0]["faces"]) == 8, "group9.jpg has 8 faces at score 0.3 / IoU 0.5"


def eight_images(assets_dir: Path) -> list[Path]:
    return [assets_dir / "images" / PHOTOS[i % 3] for i in range(8)]


def test_canonical_batch_of_8_equals_the_source_model_one_frame_at_a_time(
    raw_model: Path, canonical_model: Path, assets_dir: Path
) -> None:
    engine = OnnxRuntimeEngine(canonical_model, max_batch=8)
    frames = [load_image(str(p)) for p in eight_images(assets_dir)]
    letterboxed = [letterbox(frame, 640, 640) for frame in frames]
    batch = np.stack([image for image, _ in letterboxed])
    rows = engine.infer(batch)
    assert rows.shape == (8, 15, 25200)
    settings = PostprocessSettings()
    for index, (frame, (image, box)) in enumerate(zip(frames, letterboxed, strict=True)):
        ours = postprocess(rows[index], box, settings).as_records()
        # The source model on the very same pixels, alone, decoded by the reference.
        tensor = image.transpose(2, 0, 1)[None].astype(np.float32) / 255
        heads = session(raw_model).run(None, {"data": tensor})
        reference = reference_faces(reference_decode(heads), box.scale, box.pad_x, box.pad_y)
        assert_same_faces(ours, reference, f"image {index}")
        ref_scores = np.sort(reference[:, 4])
        assert np.allclose(np.sort([f["score"] for f in ours]), ref_scores, atol=1e-3)
        assert frame.width == box.source_width


def test_upstream_export_layout_is_accepted_and_agrees(raw_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    exported = export_layout_model(raw_model, tmp_path / "export.onnx")
    prepared = prepare_model(exported, tmp_path / "from-export.onnx")
    assert prepared.source_layout == "decoded"
    assert read_canonical_info(prepared.path).source_layout == "decoded"
    engine = OnnxRuntimeEngine(prepared.path, max_batch=8)
    image, box = letterbox(load_image(str(assets_dir / "images" / "group9.jpg")), 640, 640)
    rows = engine.infer(np.stack([image] * 3))
    assert np.allclose(rows[0], rows[2])
    tensor = image.transpose(2, 0, 1)[None].astype(np.float32) / 255
    reference = reference_faces(session(exported).run(None, {"data": tensor})[0][0], box.scale, box.pad_x, box.pad_y)
    assert_same_faces(postprocess(rows[0], box, PostprocessSettings()).as_records(), reference, "export layout")


def test_unknown_layout_is_rejected_with_what_does_not_fit(raw_model: Path, tmp_path: Path) -> None:
    model = onnx.load(str(raw_model))
    del model.graph.output[1:]
    path = tmp_path / "one-head.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"outputs do not match a YOLOv5-Face layout.*stride_8 \[1, 3, 80, 80, 16\]"):
        prepare_model(path, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_broken_or_missing_files_get_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        prepare_model(junk, tmp_path / "out.onnx")
    with pytest.raises(ModelError, match="no such file"):
        prepare_model(tmp_path / "absent.onnx", tmp_path / "out.onnx")


def test_engine_refuses_a_model_that_was_not_prepared(raw_model: Path) -> None:
    with pytest.raises(EngineError, match=r"not a canonical streamd model.*streamd model prepare"):
        OnnxRuntimeEngine(raw_model, max_batch=1)


def test_a_model_prepared_in_the_older_row_format_is_refused_with_the_remedy(
    canonical_model: Path, tmp_path: Path
) -> None:
    model = onnx.load(str(canonical_model))
    for prop in model.metadata_props:
        if prop.key == "streamd.canonical":
            prop.value = "1"
    older = tmp_path / "older.onnx"
    onnx.save(model, str(older))
    with pytest.raises(ModelError, match=r"canonical format 1, this streamd reads format 2.*prepare"):
        read_canonical_info(older)


def test_prepare_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"x")
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "model", "prepare", str(junk), "-o", str(tmp_path / "o.onnx")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "not a readable ONNX model" in result.stderr and "Traceback" not in result.stderr
