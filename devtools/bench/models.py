"""The detector the benchmarks run: `--model` (any YOLOv5-Face ONNX) or the shared one,
made canonical under the bench's output folder."""

from __future__ import annotations

from pathlib import Path

from devtools.testing.demo import ASSETS
from streamd.model.prepare import prepare_model


def bench_model(bench: str, given: Path | None, out: Path) -> Path | None:
    """The canonical model in `out`; None (said on stdout) when there is no source model."""
    source = given or ASSETS / "models" / "yolov5n-0.5.onnx"
    if not source.is_file():
        print(f"bench {bench}: no model at {source} (give --model)")
        return None
    out.mkdir(parents=True, exist_ok=True)
    return prepare_model(source, out / "bench-model.onnx").path
