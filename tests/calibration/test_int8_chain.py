"""Calibration frames from real (file) cameras, the Q/DQ INT8 model, and its report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from devtools.testing.demo import CACHE_DIR
from devtools.testing.video import VideoSpec, cached_video
from streamd.calibration.collect import collect
from streamd.calibration.crowd import write_crowd_frames
from streamd.calibration.manifest import load_manifest, split
from streamd.calibration.quantize import quantize, sensitive_convolutions
from streamd.calibration.report import compare
from streamd.config.schema import StreamsConfig
from streamd.model.canonical import read_canonical_info
from tests.support.waiting import run

pytestmark = pytest.mark.assets


@pytest.fixture(scope="module")
def photo_cameras(assets_dir: Path) -> StreamsConfig:
    videos = {
        name: cached_video(
            VideoSpec(width=640, height=480, fps=10, seconds=4, image=str(assets_dir / "images" / f"{name}.jpg")),
            CACHE_DIR,
        )
        for name in ("group9", "two_people")
    }
    return StreamsConfig.model_validate(
        {"cameras": [{"id": name.replace("_", "-"), "url": str(path), "fps": 10} for name, path in videos.items()]}
    )


@pytest.fixture(scope="module")
def frames(photo_cameras: StreamsConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibration")
    entries = run(collect(photo_cameras, out, count=24, interval_s=0.1, held_out_share=0.25, timeout_s=60))
    assert len(entries) == 24
    return out


def test_collect_spreads_over_cameras_and_keeps_a_held_out_share(frames: Path) -> None:
    entries = load_manifest(frames)
    per_camera = Counter(e.camera for e in entries)
    assert set(per_camera) == {"group9", "two-people"} and min(per_camera.values()) >= 8
    assert len(split(entries, "held_out")) == 6 and len(split(entries, "calibration")) == 18
    for camera in per_camera:
        stamps = sorted(e.pts for e in entries if e.camera == camera)
        assert stamps[-1] - stamps[0] >= 0.5, "frames of one camera spread over time"
    first = entries[0]
    assert (first.width, first.height) == (640, 480) and (frames / first.file).stat().st_size > 5_000
    body = json.loads((frames / "manifest.json").read_text())
    assert body["version"] == 1 and body["held_out_share"] == 0.25


def test_quantized_model_is_qdq_int8_and_agrees_with_fp32(frames: Path, canonical_model: Path, tmp_path: Path) -> None:
    int8 = tmp_path / "int8.onnx"
    assert quantize(canonical_model, [frames], int8) == 18
    model = onnx.load(str(int8))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 50 and ops["DequantizeLinear"] > 50
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    weights_q = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and len(n.input) == 3]
    assert weights_q, "per-channel weights carry an axis"
    assert read_canonical_info(int8).input_width == 640  # still a canonical model
    # The sensitive layers stay in float: no DequantizeLinear feeds their weights.
    kept = set(sensitive_convolutions(onnx.load(str(canonical_model)).graph))
    assert len(kept) == 4, "the first convolution and the three detection heads"
    dequantized = {out for n in model.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    float_convs = {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in dequantized}
    assert kept <= float_convs and len(float_convs) == len(kept)
    assert {p.key: p.value for p in model.metadata_props}["streamd.precision"] == "int8-qdq"

    report = compare(canonical_model, int8, frames, threshold=0.95)
    assert report.frames == 6 and report.fp32_faces >= 6
    assert report.recall >= 0.95 and report.precision >= 0.95, report.text()
    assert report.mean_iou > 0.8 and abs(report.mean_score_drift) < 0.05
    assert "verdict:           PASS" in report.text()


def test_manifest_with_a_missing_frame_is_refused(frames: Path, tmp_path: Path) -> None:
    copy = tmp_path / "frames"
    copy.mkdir()
    (copy / "manifest.json").write_text((frames / "manifest.json").read_text())
    with pytest.raises(ValueError, match="frame file\\(s\\) missing"):
        load_manifest(copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a calibration manifest"):
        load_manifest(tmp_path / "empty")


def test_crowd_frames_hold_many_small_faces(assets_dir: Path, canonical_model: Path, tmp_path: Path) -> None:
    import numpy as np

    from streamd.analysis.postprocess import PostprocessSettings, postprocess
    from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
    from streamd.frames.letterbox import letterbox, load_image

    photos = sorted((assets_dir / "images").glob("*.jpg"))
    entries = write_crowd_frames(canonical_model, photos, tmp_path, count=3, held_out_share=2 / 3, seed=5)
    assert [e.split for e in entries] == ["held_out", "held_out", "calibration"]
    assert load_manifest(tmp_path) == entries
    engine = OnnxRuntimeEngine(canonical_model, max_batch=1)
    for entry in entries:
        image, box = letterbox(load_image(str(tmp_path / entry.file)), 640, 640)
        faces = postprocess(engine.infer(image[np.newaxis])[0], box, PostprocessSettings())
        widths = faces.boxes[:, 2] - faces.boxes[:, 0]
        assert len(faces) >= 20, f"{entry.file}: a crowd, not {len(faces)} faces"
        assert 10 <= float(np.median(widths)) <= 30 and widths.max() <= 40


def test_crowd_scenes_hold_hundreds_of_small_faces_at_camera_resolution(
    assets_dir: Path, canonical_model: Path, tmp_path: Path
) -> None:
    import numpy as np

    from streamd.analysis.postprocess import PostprocessSettings, postprocess
    from streamd.calibration.crowd import write_scene_frames
    from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
    from streamd.frames.letterbox import letterbox, load_image

    photos = sorted((assets_dir / "images").glob("*.jpg"))
    (entry,) = write_scene_frames(canonical_model, photos, tmp_path, count=1, held_out_share=1.0, seed=7)
    assert (entry.width, entry.height, entry.split) == (1920, 1080, "held_out")
    picture = load_image(str(tmp_path / entry.file))
    assert (picture.width, picture.height) == (1920, 1080), "a camera frame's size, letterboxed like one"
    engine = OnnxRuntimeEngine(canonical_model, max_batch=1)
    image, box = letterbox(picture, 640, 640)
    faces = postprocess(engine.infer(image[np.newaxis])[0], box, PostprocessSettings())
    engine.close()
    widths_in_model = (faces.boxes[:, 2] - faces.boxes[:, 0]) * box.scale
    assert len(faces) >= 80, f"a crowd, not {len(faces)} faces"
    assert 8 <= float(np.median(widths_in_model)) <= 32


def test_percentile_calibration_fits_in_a_few_gigabytes(frames: Path, canonical_model: Path, tmp_path: Path) -> None:
    """ONNX Runtime's histogram calibrator kept every frame's activations and grew histograms
    without bound (killed at 24 GiB); streamed with fixed bins it must fit under 6 GiB of
    address space, enforced by the kernel on a child process."""
    import subprocess
    import sys

    int8 = tmp_path / "percentile.onnx"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"
        "from pathlib import Path\n"
        "from streamd.calibration.quantize import quantize\n"
        "print(quantize(Path(sys.argv[1]), [Path(sys.argv[2])], Path(sys.argv[3]), 'percentile'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(canonical_model), str(frames), str(int8)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "18"
    report = compare(canonical_model, int8, frames, threshold=0.95)
    assert report.passed, report.text()


def test_choose_keeps_the_candidate_that_agrees_best_on_held_out_frames(
    frames: Path, canonical_model: Path, tmp_path: Path
) -> None:
    from streamd.calibration.choose import choose

    said: list[str] = []
    chosen = tmp_path / "chosen.onnx"
    best, candidates = choose(canonical_model, [frames], [frames], chosen, methods=("minmax",), say=said.append)
    assert [(c.method, c.keep_sensitive_float) for c in candidates] == [("minmax", True), ("minmax", False)]
    assert len(said) == 2 and all("recall" in line for line in said)
    assert best.rank == max(c.rank for c in candidates)
    again = compare(canonical_model, chosen, frames)
    assert (again.recall, again.precision) == (best.report.recall, best.report.precision), "the kept file is the best"
