"""ONNX Runtime backend: CPU by default, its CUDA or TensorRT providers where installed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamd.engine.base import EngineError
from streamd.model.canonical import INPUT_NAME, OUTPUT_NAME, ModelError, read_canonical_info

log = logging.getLogger(__name__)

# Tried in this order when `providers` is not given; ONNX Runtime skips none silently,
# so only the ones this installation has are asked for.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(wanted: list[str] | None) -> list[str]:
    """`wanted` if all are installed, else EngineError; None: the best installed ones."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = wanted or [p for p in _PREFERRED if p in available]
    missing = [p for p in chosen if p not in available]
    if missing:
        raise EngineError(f"ONNX Runtime providers not available here: {missing} (available: {available})")
    return chosen


class OnnxRuntimeEngine:
    name = "onnxruntime"
    on_gpu = False  # its input is host memory, whichever provider runs the graph

    def __init__(
        self,
        model: str | Path,
        max_batch: int,
        threads: int = 0,
        providers: list[str] | None = None,
        spin_wait: bool = False,
    ) -> None:
        import onnxruntime as ort

        try:
            info = read_canonical_info(model)
        except ModelError as exc:
            raise EngineError(str(exc)) from exc
        chosen = choose_providers(providers)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        # Spinning threads answer a few ms sooner but burn the cores the decoders need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        # The memory pattern is a plan of allocations cached per input shape, and every
        # batch size is a shape: with batches of 1 to 8 one instance grew from 203 to
        # 469 MB (measured), which looked like 50 MB "per camera" because more cameras
        # make more batch sizes. Without it: 216 MB, and no slower per frame (31-32 ms
        # against 34-39 ms on one thread, the same run).
        options.enable_mem_pattern = False
        try:
            self._session = ort.InferenceSession(str(model), options, providers=chosen)
        except Exception as exc:
            raise EngineError(f"ONNX Runtime cannot load {model}: {exc}") from exc
        self.providers = self._session.get_providers()
        self.input_height, self.input_width = info.input_height, info.input_width
        self.max_batch = max_batch
        log.info("onnxruntime engine: %s, providers %s, max batch %d", Path(model).name, self.providers, max_batch)

    def new_input_buffer(self) -> np.ndarray:
        return np.empty((self.max_batch, self.input_height, self.input_width, 3), dtype=np.uint8)

    def load(self, buffer: np.ndarray, index: int, image: Any) -> None:
        buffer[index] = image.get() if hasattr(image, "get") else image  # a CuPy image comes down

    def infer(self, images: np.ndarray) -> np.ndarray:
        rows: np.ndarray = self._session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        return rows

    def close(self) -> None:
        del self._session
