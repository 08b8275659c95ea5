"""Choose and load the inference backend named in `engine.backend`, sized by `auto`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from streamd.config.schema import EngineBackend, EngineConfig
from streamd.engine.base import BackendUnavailable, Engine, EngineError
from streamd.engine.onnxruntime_backend import OnnxRuntimeEngine, choose_providers
from streamd.engine.sizing import EngineSizing
from streamd.machine.hardware import Machine, detect_machine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engines:
    instances: list[Engine]
    sizing: EngineSizing


def create_engines(
    config: EngineConfig, max_batch: int | Literal["auto"], cameras: int = 1, machine: Machine | None = None
) -> Engines:
    """Load the engine instances (blocking: seconds each; call from a thread), as many and
    with batches as large as the configuration says or `auto` chooses for this machine
    (`streamd.machine.auto`: one single-threaded instance per usable core on a CPU, one
    instance with batches of every camera's frame on a GPU).
    """
    sizing = EngineSizing(config, max_batch, cameras, machine or detect_machine())
    if config.backend is not EngineBackend.onnxruntime:
        try:
            engine = _tensorrt(config, sizing.choices(on_gpu=True).max_batch.value)
            sizing.log_choices()
            return Engines([engine], sizing)
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
    choices = sizing.choices(on_gpu=any(p != "CPUExecutionProvider" for p in providers))
    sizing.log_choices()
    instances, threads, batch = choices.instances.value, choices.threads.value, choices.max_batch.value
    log.info("%d engine instance(s), %d thread(s) each, providers %s", instances, threads, providers)
    engines: list[Engine] = [
        OnnxRuntimeEngine(config.model, batch, threads, providers, config.spin_wait) for _ in range(instances)
    ]
    return Engines(engines, sizing)


def _tensorrt(config: EngineConfig, max_batch: int) -> Engine:
    from streamd.engine.tensorrt_backend import Profile, TensorRtEngine

    profile = Profile(config.profile.min, config.profile.optimize_for(max_batch), config.profile.max)
    return TensorRtEngine(config.model, max_batch, profile, config.cache_path)
