"""`streamd calibrate choose`: the calibration method and the layers kept in float, chosen by
how well INT8 agrees with FP32 on held-out frames.

Which method clips activations best, and whether the first convolution and the heads
must stay in float, depends on the model and on what the cameras see; a crowd is where
they differ. So every candidate (each method, with and without the sensitive layers in
float) is quantized on the calibration frames and reported against FP32 on the held-out
frames of every folder given (camera frames, crowd scenes), and the one with the best
worse-of recall and precision (then mean IoU) is kept.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamd.calibration.quantize import METHODS, quantize
from streamd.calibration.report import Report, compare


@dataclass(frozen=True)
class Candidate:
    method: str
    keep_sensitive_float: bool
    report: Report

    @property
    def name(self) -> str:
        return f"{self.method}, {'first and head convolutions in float' if self.keep_sensitive_float else 'all int8'}"

    @property
    def rank(self) -> tuple[float, float]:
        return min(self.report.recall, self.report.precision), self.report.mean_iou


def combined(reports: list[Report]) -> Report:
    """One report over several folders' held-out frames (faces summed, IoU and drift weighted by matches)."""
    matched = sum(r.matched for r in reports)

    def weighted(field: str) -> float:
        return sum(getattr(r, field) * r.matched for r in reports) / matched if matched else 0.0

    return Report(
        frames=sum(r.frames for r in reports),
        fp32_faces=sum(r.fp32_faces for r in reports),
        int8_faces=sum(r.int8_faces for r in reports),
        matched=matched,
        mean_iou=weighted("mean_iou"),
        mean_score_drift=weighted("mean_score_drift"),
        max_score_drift=max(r.max_score_drift for r in reports),
        threshold=reports[0].threshold,
    )


def choose(
    model: Path,
    frames_dirs: list[Path],
    held_out_dirs: list[Path],
    output: Path,
    methods: tuple[str, ...] = METHODS,
    threshold: float = 0.95,
    say: Callable[[str], None] = print,
) -> tuple[Candidate, list[Candidate]]:
    """Quantize every candidate, keep the best at `output`; returns it and all candidates."""
    candidates: dict[Path, Candidate] = {}
    with tempfile.TemporaryDirectory(prefix="streamd-choose-") as scratch:
        for method in methods:
            for keep in (True, False):
                path = Path(scratch) / f"{method}-{'float' if keep else 'int8'}.onnx"
                quantize(model, frames_dirs, path, method, keep_sensitive_float=keep)
                report = combined([compare(model, path, folder, threshold) for folder in held_out_dirs])
                candidates[path] = candidate = Candidate(method, keep, report)
                say(
                    f"{candidate.name}: recall {report.recall:.3f}, precision {report.precision:.3f}, "
                    f"mean IoU {report.mean_iou:.3f} ({report.fp32_faces} FP32 faces)"
                )
        best_path = max(candidates, key=lambda path: candidates[path].rank)
        shutil.copyfile(best_path, output)
    return candidates[best_path], list(candidates.values())
