"""Choose and load the inference backend named in `engine.backend`."""

from __future__ import annotations

import logging
import os

from streamd.config.schema import EngineBackend, EngineConfig
from streamd.engine.base import BackendUnavailable, Engine, EngineError
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine, choose_providers

log = logging.getLogger(__name__)


def create_engines(config: EngineConfig, max_batch: int) -> list[Engine]:
    """Load the engine instances (blocking: seconds each; call from a thread).

    On a CPU, several single-threaded instances each running whole batches beat one
    instance that splits every layer across the cores: the split waits at every layer
    for its slowest thread, and with decode threads preempting cores that wait is long
    (measured on 2 cores: 89 against 55 frames/s alone, 60 against 31 under decode-like
    load). Like Triton's instance groups. A GPU runs one instance.
    """
    if config.backend is not EngineBackend.onnxruntime:
        try:
            return [_tensorrt(config, max_batch)]
        except EngineError as error:
            if config.backend is EngineBackend.tensorrt:
                raise
            # No TensorRT or no GPU is how a CPU box is meant to run: news, not trouble.
            # Anything else (a cache that cannot be written, a model TensorRT rejects)
            # is a problem the operator should fix.
            if isinstance(error, BackendUnavailable):
                log.info("engine.backend auto: ONNX Runtime, because TensorRT cannot run here (%s)", error)
            else:
                log.warning("engine.backend auto: ONNX Runtime, because TensorRT failed: %s", error)
    providers = choose_providers(config.providers)
    on_gpu = any(p != "CPUExecutionProvider" for p in providers)
    cores = os.cpu_count() or 1
    instances = config.instances or (1 if on_gpu else cores)
    threads = config.threads or max(1, cores // instances)
    log.info("%d engine instance(s), %d thread(s) each, providers %s", instances, threads, providers)
    engines: list[Engine] = [
        OnnxRuntimeEngine(config.model, max_batch, threads, providers, config.spin_wait) for _ in range(instances)
    ]
    return engines


def _tensorrt(config: EngineConfig, max_batch: int) -> Engine:
    from streamd.engine.tensorrt_backend import Profile, TensorRtEngine

    profile = Profile(config.profile.min, config.profile.optimize_for(max_batch), config.profile.max)
    return TensorRtEngine(config.model, max_batch, profile, config.cache_path)
