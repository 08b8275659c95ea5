from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from streamd.analysis import postprocess as postprocess_module
from streamd.analysis.postprocess import PostprocessSettings, iou_matrix, postprocess, postprocess_batch
from streamd.frames.letterbox import Letterbox, letterbox_geometry


def planes_for(boxes_xywh: Sequence[tuple[float, float, float, float]], scores: list[float]) -> np.ndarray:
    """The canonical output of one image with these candidates: [15, K] planes."""
    rows = np.zeros((len(boxes_xywh), 15), dtype=np.float32)
    rows[:, 0:4] = boxes_xywh
    rows[:, 4] = scores
    for k in range(5):  # landmarks at the box centre
        rows[:, 5 + 2 * k] = rows[:, 0]
        rows[:, 6 + 2 * k] = rows[:, 1]
    return np.ascontiguousarray(rows.T)


IDENTITY = Letterbox(scale=1.0, pad_x=0, pad_y=0, source_width=640, source_height=640)


def test_iou_matrix_known_values() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    iou = iou_matrix(boxes)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0 and iou[1, 1] == pytest.approx(1)


def test_threshold_and_nms_keep_the_best_of_each_overlapping_group() -> None:
    planes = planes_for(
        [(100, 100, 50, 50), (102, 101, 50, 50), (300, 300, 40, 40), (500, 500, 30, 30)],
        [0.9, 0.8, 0.7, 0.2],
    )
    faces = postprocess(planes, IDENTITY, PostprocessSettings(score_threshold=0.3, iou_threshold=0.5))
    assert faces.scores.tolist() == pytest.approx([0.9, 0.7])
    assert faces.boxes[0].tolist() == pytest.approx([75, 75, 125, 125])
    assert faces.landmarks.shape == (2, 5, 2)


def test_crowd_of_hundreds_keeps_every_separate_face_and_caps() -> None:
    grid = [(16 + 32 * (i % 20), 16 + 32 * (i // 20), 24, 24) for i in range(400)]
    duplicates = [(x + 1, y + 1, w, h) for x, y, w, h in grid]
    rng = np.random.default_rng(1)
    scores = list(rng.uniform(0.5, 0.99, 400))
    planes = planes_for(grid + duplicates, scores + [s - 0.1 for s in scores])
    faces = postprocess(planes, IDENTITY, PostprocessSettings(max_faces=1000))
    assert len(faces) == 400  # every duplicate suppressed, no real face lost
    capped = postprocess(planes, IDENTITY, PostprocessSettings(max_faces=50))
    assert len(capped) == 50 and capped.scores.min() >= np.sort(scores)[-50] - 1e-6


def test_boxes_return_to_camera_pixels_and_are_clipped() -> None:
    new_w, new_h, box = letterbox_geometry(1920, 1080, 640, 640)
    assert (new_w, new_h, box.pad_x, box.pad_y) == (640, 360, 0, 140)
    # A face at the camera's (960, 540), 192 px wide, and one spilling over the left edge.
    planes = planes_for([(320, 320, 64, 64), (5, 320, 40, 40)], [0.9, 0.8])
    faces = postprocess(planes, box, PostprocessSettings())
    assert faces.boxes[0].tolist() == pytest.approx([864, 444, 1056, 636], abs=0.01)
    assert faces.boxes[1][0] == 0.0  # clipped, not negative
    records = faces.as_records()
    assert records[0]["landmarks"][0] == pytest.approx([960, 540], abs=0.1)


def test_no_candidates_gives_no_faces() -> None:
    faces = postprocess(planes_for([(1, 1, 1, 1)], [0.01]), IDENTITY, PostprocessSettings())
    assert len(faces) == 0 and faces.as_records() == []


def test_max_faces_stops_suppression_early_with_the_best_faces() -> None:
    centres = [(i * 20 + 5, 5, 10, 10) for i in range(10)]  # ten faces that do not overlap
    faces = postprocess(
        planes_for(centres, list(np.linspace(0.95, 0.5, 10))), IDENTITY, PostprocessSettings(max_faces=3)
    )
    assert faces.scores.tolist() == pytest.approx([0.95, 0.9, 0.85], abs=1e-6)


@pytest.mark.parametrize("pairs_per_pass", [1 << 20, 50])
def test_a_batch_gives_each_image_exactly_what_it_gives_alone(
    monkeypatch: pytest.MonkeyPatch, pairs_per_pass: int
) -> None:
    """Images of one batch never suppress each other's faces, keep their own caps and
    their own letterbox, whether they share one NMS pass or not (50 pairs: every image
    with candidates in a pass of its own)."""
    monkeypatch.setattr(postprocess_module, "_PAIRS_PER_PASS", pairs_per_pass)
    rng = np.random.default_rng(5)
    images, anchors = 6, 400
    planes = rng.uniform(0, 640, (images, 15, anchors)).astype(np.float32)
    planes[:, 2:4] = rng.uniform(8, 80, (images, 2, anchors))
    planes[:, 4] = rng.uniform(0, 1, (images, anchors)) ** 4
    planes[2, 4] = 0.0  # an image without a candidate
    planes[1] = planes[0]  # the same candidates as image 0: they must not suppress each other
    boxes = [letterbox_geometry(int(w), int(h), 640, 640)[2] for w, h in rng.integers(200, 2600, (images, 2))]
    settings = PostprocessSettings(score_threshold=0.3, iou_threshold=0.4, max_faces=12, max_candidates=60)
    batch = postprocess_batch(planes, boxes, settings)
    assert len(batch) == images
    counts = []
    for image in range(images):
        alone = postprocess(planes[image], boxes[image], settings)
        together = batch.of(image)
        assert np.array_equal(together.boxes, alone.boxes), image
        assert np.array_equal(together.scores, alone.scores) and np.array_equal(together.landmarks, alone.landmarks)
        counts.append(len(alone))
    assert counts[2] == 0 and min(counts[:2]) > 0 and max(counts) == 12  # the cap bit somewhere
    assert batch.records()[3] == postprocess(planes[3], boxes[3], settings).as_records()
