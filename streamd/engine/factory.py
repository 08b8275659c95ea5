"""Choose and load the inference backend named in `engine.backend`."""

from __future__ import annotations

import logging

from streamd.config import EngineBackend, EngineConfig
from streamd.engine.base import Engine, EngineError
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine

log = logging.getLogger(__name__)


def create_engine(config: EngineConfig, max_batch: int) -> Engine:
    """Load the engine (blocking: seconds for a large model; call from a thread)."""
    if config.backend is EngineBackend.tensorrt:
        raise EngineError(
            "engine.backend: the native TensorRT backend is not part of this version yet; use `onnxruntime` "
            "(its TensorRT and CUDA execution providers are used where installed) or `auto`"
        )
    if config.backend is EngineBackend.auto:
        log.info("engine.backend auto: ONNX Runtime (native TensorRT backend not available in this version)")
    return OnnxRuntimeEngine(config.model, max_batch, config.threads, config.providers)
