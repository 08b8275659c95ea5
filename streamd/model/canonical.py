"""The canonical face-detection model: the one contract every engine backend loads.

`streamd model prepare` turns the YOLOv5-Face ONNX layouts users bring into this form:

- input `images`: uint8 [batch, H, W, 3], RGB, 0..255, the frame letterboxed to H x W
  with pad value 114 (the scaling to 0..1 and the NHWC -> NCHW transpose are inside the
  graph, so the host copies a quarter of the bytes and converts nothing);
- output `detections`: float32 [batch, 15, N], fifteen planes of N candidate boxes:
  `cx, cy, w, h` (box centre and size, input pixels), `score` (objectness x face
  class, 0..1), then the five landmarks `x1, y1, ..., x5, y5` (input pixels).
  Candidates are not filtered: thresholding and NMS are the postprocess stage's job.
  Planes, not rows (format 2): the score threshold reads one contiguous plane of
  N floats per image (100 KB at 640) instead of striding through all 1.5 MB of
  candidates, which made it the most expensive step per frame on the host (measured
  by `python -m devtools.bench scale`: 110 against 13 us); on the GPU the planes are the
  detection heads' own layout, so the engine does less work too.
- the batch dimension is dynamic; H and W are fixed and recorded in the metadata.

Metadata (ONNX `metadata_props`): `streamd.canonical` = format version,
`streamd.input_size` = "H,W", `streamd.source_layout` = how it was made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamd.base.errors import ErrorKind, StreamdError

INPUT_NAME = "images"
OUTPUT_NAME = "detections"
FORMAT_VERSION = "2"
ROW_WIDTH = 15
SCORE_COLUMN = 4
LANDMARKS = slice(5, 15)
PAD_VALUE = 114


class ModelError(StreamdError, ValueError):
    """A model file that streamd cannot use; the message says what does not fit."""

    kind = ErrorKind.model


@dataclass(frozen=True)
class CanonicalInfo:
    path: Path
    input_height: int
    input_width: int
    source_layout: str


def read_canonical_info(path: str | Path) -> CanonicalInfo:
    """Check that `path` is a canonical model and return its facts, without loading weights."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    meta = {prop.key: prop.value for prop in model.metadata_props}
    version = meta.get("streamd.canonical")
    if version is not None and version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: canonical format {version}, this streamd reads format {FORMAT_VERSION} "
            f"(run `streamd model prepare` on the source model again)"
        )
    if version is None:
        raise ModelError(
            f"{path}: not a canonical streamd model (run `streamd model prepare {path.name} -o OUT.onnx` first)"
        )
    height, width = (int(v) for v in meta["streamd.input_size"].split(","))
    return CanonicalInfo(path, height, width, meta.get("streamd.source_layout", "unknown"))
