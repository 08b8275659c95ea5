"""`streamd calibrate report`: INT8 against FP32 on the held-out frames.

Both models run in ONNX Runtime (so this works on a CPU), through the same letterbox
and postprocess as the daemon. FP32's faces are the reference: recall is the share of
them INT8 also finds (IoU >= 0.5, greedy best match), precision the share of INT8's
faces that FP32 also has. Mean IoU and the score drift of matched faces tell how close
the boxes and scores stay. Faces near the score threshold are where the two disagree
first, so the verdict is recall and precision against a threshold (default 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamd.analysis.postprocess import Faces, PostprocessSettings, iou_matrix, postprocess
from streamd.base.errors import InputError
from streamd.calibration.manifest import load_manifest, split
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.letterbox import letterbox, load_image


@dataclass(frozen=True)
class Report:
    frames: int
    fp32_faces: int
    int8_faces: int
    matched: int
    mean_iou: float
    mean_score_drift: float
    max_score_drift: float
    threshold: float

    @property
    def recall(self) -> float:
        return self.matched / self.fp32_faces if self.fp32_faces else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.int8_faces if self.int8_faces else 1.0

    @property
    def passed(self) -> bool:
        return self.recall >= self.threshold and self.precision >= self.threshold

    def text(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return "\n".join(
            [
                f"held-out frames:   {self.frames}",
                f"faces FP32 / INT8: {self.fp32_faces} / {self.int8_faces} (matched {self.matched} at IoU >= 0.5)",
                f"recall:            {self.recall:.3f}",
                f"precision:         {self.precision:.3f}",
                f"mean IoU:          {self.mean_iou:.3f}",
                f"score drift:       mean {self.mean_score_drift:+.4f}, largest {self.max_score_drift:.4f}",
                f"verdict:           {verdict} (recall and precision >= {self.threshold})",
            ]
        )


def match(reference: Faces, candidate: Faces, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matches (reference index, candidate index, IoU), best IoU first."""
    if not len(reference) or not len(candidate):
        return []
    boxes = np.concatenate([reference.boxes, candidate.boxes])
    ious = iou_matrix(boxes)[: len(reference), len(reference) :]
    pairs = []
    used_r, used_c = set(), set()
    for flat in np.argsort(-ious, axis=None):
        r, c = divmod(int(flat), ious.shape[1])
        if ious[r, c] < iou_threshold:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c, float(ious[r, c])))
    return pairs


def compare(fp32: Path, int8: Path, frames_dir: Path, threshold: float = 0.95) -> Report:
    held_out = split(load_manifest(frames_dir), "held_out")
    if not held_out:
        raise InputError(f"{frames_dir}: no held-out frames in the manifest")
    reference_engine = OnnxRuntimeEngine(fp32, max_batch=1)
    int8_engine = OnnxRuntimeEngine(int8, max_batch=1)
    settings = PostprocessSettings()
    totals = {"fp32": 0, "int8": 0}
    ious: list[float] = []
    drifts: list[float] = []
    for entry in held_out:
        image, box = letterbox(
            load_image(str(frames_dir / entry.file)), reference_engine.input_width, reference_engine.input_height
        )
        ours = postprocess(reference_engine.infer(image[np.newaxis])[0], box, settings)
        theirs = postprocess(int8_engine.infer(image[np.newaxis])[0], box, settings)
        totals["fp32"] += len(ours)
        totals["int8"] += len(theirs)
        for r, c, iou in match(ours, theirs):
            ious.append(iou)
            drifts.append(float(theirs.scores[c] - ours.scores[r]))
    reference_engine.close()
    int8_engine.close()
    return Report(
        frames=len(held_out),
        fp32_faces=totals["fp32"],
        int8_faces=totals["int8"],
        matched=len(ious),
        mean_iou=float(np.mean(ious)) if ious else 0.0,
        mean_score_drift=float(np.mean(drifts)) if drifts else 0.0,
        max_score_drift=float(np.max(np.abs(drifts))) if drifts else 0.0,
        threshold=threshold,
    )
