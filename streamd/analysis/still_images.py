"""`streamd detect`: faces in still images, through the same model and postprocess as cameras."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamd.analysis.postprocess import PostprocessSettings, postprocess
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine
from streamd.frames.letterbox import letterbox, load_image


def detect_images(paths: list[str], model: str | Path, settings: PostprocessSettings) -> list[dict[str, Any]]:
    """One record per image: `image`, `width`, `height`, `faces` (as in the camera records)."""
    engine = OnnxRuntimeEngine(model, max_batch=1)
    records = []
    try:
        for path in paths:
            frame = load_image(path)
            image, box = letterbox(frame, engine.input_width, engine.input_height)
            rows = engine.infer(image[np.newaxis])[0]
            faces = postprocess(rows, box, settings)
            records.append({"image": path, "width": frame.width, "height": frame.height, "faces": faces.as_records()})
    finally:
        engine.close()
    return records
