"""Native TensorRT backend (TensorRT 10.x and 11.x), with CuPy for buffers and streams.

Build: the canonical ONNX (FP32) or its Q/DQ INT8 form (`streamd calibrate quantize`) is
parsed into a network, given one optimization profile over the batch (min/opt/max,
default 1 / batcher.max_batch / 32) and built with a timing cache. Precision (`_precision`):
on TensorRT 10, INT8 where the Q/DQ pairs say and FP16 for the float parts; on TensorRT
11, which removed the precision flags, a strongly typed network in the model's own types.

Engines are specific to the GPU and the TensorRT version, so they are cached under a
key of (model file hash, GPU name, TensorRT version, profile) and rebuilt when any of
them changes (`streamd.engine.cache`); `streamd engine build` builds ahead of time.

Inference: `set_input_shape`, `set_tensor_address`, `execute_async_v3` on the engine's
own (non-default) CUDA stream; host images are copied up asynchronously from pinned
staging buffers, GPU letterboxed ones device to device with a plain memcpy (no CuPy
elementwise kernel, which would need NVRTC), all on the stream the batch then runs on;
the output comes back into a pinned host buffer.
Batches smaller than the profile's minimum run padded to it (the extra rows are
ignored), so any `profile.min` works with the batcher's partial batches.

Not run on a GPU yet (no GPU in the session that wrote it): see docs/gpu.md, "GPU status".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from streamd.engine.base import BackendUnavailable, EngineError
from streamd.engine.cache import EngineCache, Profile
from streamd.gpu.errors import raised_by_cupy
from streamd.model.canonical import INPUT_NAME, OUTPUT_NAME, ROW_WIDTH, ModelError, read_canonical_info

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 2 << 30

__all__ = ["Profile", "TensorRtEngine", "build_engine", "is_qdq_model"]


def is_qdq_model(model: Path) -> bool:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return any(node.op_type == "QuantizeLinear" for node in graph.node)


# The Python API this backend speaks (named tensors, set_tensor_address, execute_async_v3).
MIN_TENSORRT_MAJOR = 10


def _import_tensorrt() -> tuple[Any, Any]:
    """TensorRT and CuPy, or BackendUnavailable saying why not: whatever importing them
    raises. CuPy 14.1+ creates its kernel cache under $HOME when imported, and a unit
    with a read-only home gets an OSError, not an ImportError: the units set
    CUPY_CACHE_DIR under their state directory."""
    try:
        import cupy
        import tensorrt as trt
    except ImportError as error:
        raise BackendUnavailable(
            f"the TensorRT backend needs the `tensorrt` extra ({error.name} is missing): "
            "pip install 'streamd[tensorrt-cuda12]' (or tensorrt-cuda13) --extra-index-url https://pypi.nvidia.com"
        ) from error
    except Exception as error:
        raise BackendUnavailable(
            f"importing CuPy or TensorRT failed: {type(error).__name__}: {error} (CuPy writes its kernel cache "
            "under $HOME unless CUPY_CACHE_DIR names a writable directory)"
        ) from error
    version = str(getattr(trt, "__version__", "0"))
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < MIN_TENSORRT_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {version} is too old: streamd needs {MIN_TENSORRT_MAJOR} or later "
            "(named tensors, set_tensor_address, execute_async_v3)"
        )
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:
        raise BackendUnavailable(f"the TensorRT backend needs an NVIDIA GPU: {error}") from error
    return trt, cupy


def gpu_name(cupy: Any, device: int = 0) -> str:
    name = cupy.cuda.runtime.getDeviceProperties(device)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def build_engine(model: Path, profile: Profile, cache: EngineCache, force: bool = False) -> Path:
    """Build (or find in the cache) the engine for `model`; returns the plan file."""
    trt, cupy = _import_tensorrt()
    info = read_canonical_info(model)
    cache.prepare()
    gpu = gpu_name(cupy)
    plan_path = cache.plan_path(model, gpu, trt.__version__, profile)
    if plan_path.exists() and not force:
        log.info("TensorRT engine from cache: %s", plan_path)
        return plan_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    qdq = is_qdq_model(model)
    strongly_typed, precision_flags = _precision(trt, builder, qdq)
    network = builder.create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    )
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{model}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in precision_flags:
        config.set_flag(flag)
    shape = (info.input_height, info.input_width, 3)
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, (profile.min, *shape), (profile.opt, *shape), (profile.max, *shape))
    config.add_optimization_profile(optimization)
    timing = _attach_timing_cache(config, cache, cache.timing_path(gpu, trt.__version__))

    log.info(
        "building the TensorRT engine for %s (%s); this takes minutes",
        model.name,
        ("INT8 Q/DQ, float parts FP16" if precision_flags else "INT8 Q/DQ, float parts as typed (FP32)")
        if qdq
        else ("FP16" if precision_flags else "FP32"),
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine for {model} (see the TensorRT log above)")
    cache.write(plan_path, bytes(serialized))
    cache.write(cache.timing_path(gpu, trt.__version__), bytes(timing.serialize()))
    return plan_path


def _precision(trt: Any, builder: Any, qdq: bool) -> tuple[bool, list[Any]]:
    """(strongly typed?, builder flags) for a Q/DQ or a float model.

    TensorRT 10 still has the precision flags: a Q/DQ model is built weakly typed with
    INT8 and FP16 (the Q/DQ pairs fix the INT8 regions, and the layers left in float, the
    first convolution, the heads and the decode, may run in FP16); a float model with FP16.
    TensorRT 11 removed the flags (and platform_has_fast_fp16): networks are strongly
    typed and precision is the model's tensor types, so a Q/DQ model's float parts stay
    FP32 unless the model itself was converted (NVIDIA's ModelOpt AutoCast does that).
    """
    flag = trt.BuilderFlag
    fp16 = hasattr(flag, "FP16") and bool(getattr(builder, "platform_has_fast_fp16", True))
    if qdq:
        return (False, [flag.INT8, flag.FP16]) if fp16 and hasattr(flag, "INT8") else (True, [])
    return False, [flag.FP16] if fp16 else []


def _attach_timing_cache(config: Any, cache: EngineCache, path: Path) -> Any:
    """The saved timing cache when TensorRT accepts it, else a new one (said in the log)."""
    saved = cache.read(path)
    if saved:
        timing = config.create_timing_cache(saved)
        if timing is not None and config.set_timing_cache(timing, ignore_mismatch=False):
            return timing
        log.warning("timing cache %s does not fit this TensorRT and GPU; starting a new one", path)
    timing = config.create_timing_cache(b"")
    if timing is None or not config.set_timing_cache(timing, ignore_mismatch=False):
        raise EngineError("TensorRT refused a new, empty timing cache")
    return timing


class TensorRtEngine:
    name = "tensorrt"
    on_gpu = True

    def __init__(self, model: str | Path, max_batch: int, profile: Profile, cache_dir: Path) -> None:
        """Every failure is an EngineError (BackendUnavailable where TensorRT cannot run
        here), so `backend: auto` can fall back to ONNX Runtime and say why."""
        trt, cupy = _import_tensorrt()
        self._trt, self._cupy = trt, cupy
        self.profile, self.max_batch = profile, max_batch
        try:
            self._set_up(Path(model), cache_dir)
        except ModelError as error:  # TensorRT cannot parse it, or it is not a canonical model
            raise EngineError(str(error)) from error
        except EngineError:
            raise
        except Exception as error:
            if not raised_by_cupy(error):
                raise  # a bug of ours: its traceback is what fixes it
            raise EngineError(f"setting the TensorRT engine up failed: {type(error).__name__}: {error}") from error

    def _set_up(self, model: Path, cache_dir: Path) -> None:
        trt, cupy, profile, max_batch = self._trt, self._cupy, self.profile, self.max_batch
        info = read_canonical_info(model)
        if not profile.min <= max_batch <= profile.max:
            raise EngineError(
                f"batcher.max_batch {max_batch} is outside the engine profile {profile.min}..{profile.max}"
            )
        plan = build_engine(model, profile, EngineCache(cache_dir))
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise EngineError(f"{plan}: TensorRT could not load the engine (rebuild with `streamd engine build`)")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT's answer when it cannot (GPU memory, mostly)
            raise EngineError(f"{plan}: TensorRT could not create an execution context (out of GPU memory?)")
        self.input_height, self.input_width = info.input_height, info.input_width
        self._stream = cupy.cuda.Stream(non_blocking=True)
        candidates = self._candidates(max_batch)
        self._input = cupy.empty((max_batch, self.input_height, self.input_width, 3), dtype=cupy.uint8)
        self._output = cupy.empty((max_batch, ROW_WIDTH, candidates), dtype=cupy.float32)
        import cupyx

        self._host_output = cupyx.empty_pinned((max_batch, ROW_WIDTH, candidates), dtype=np.float32)
        self._empty_pinned = cupyx.empty_pinned
        self._staging: dict[int, np.ndarray] = {}
        log.info("tensorrt engine: %s on %s, max batch %d", plan.name, gpu_name(cupy), max_batch)

    def _input_shape(self, batch: int) -> None:
        shape = (batch, self.input_height, self.input_width, 3)
        if not self._context.set_input_shape(INPUT_NAME, shape):  # False, not an exception, when refused
            raise EngineError(f"TensorRT refused input shape {shape} (outside the engine's profile?)")

    def _candidates(self, batch: int) -> int:
        self._input_shape(batch)
        shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        if len(shape) != 3 or shape[1] != ROW_WIDTH:
            raise EngineError(
                f"engine output {OUTPUT_NAME} has shape {shape}, expected [batch, {ROW_WIDTH}, N] "
                "(an engine built from an older canonical model: rebuild it with `streamd engine build`)"
            )
        return int(shape[2])

    def new_input_buffer(self) -> Any:
        shape = (self.max_batch, self.input_height, self.input_width, 3)
        buffer = self._cupy.empty(shape, dtype=self._cupy.uint8)
        # Host images go up through pinned memory: from pageable memory cudaMemcpyAsync is
        # staged through a driver buffer and waits for it; from pinned memory it is a DMA
        # that overlaps the running batch. A row is refilled only when its buffer is free
        # again, after its batch (and so its uploads) finished.
        self._staging[buffer.data.ptr] = self._empty_pinned(shape, dtype=np.uint8)
        return buffer

    def load(self, buffer: Any, index: int, image: Any) -> None:
        target = buffer[index]
        if isinstance(image, np.ndarray):
            staged = self._staging[buffer.data.ptr][index]
            np.copyto(staged, image)
            target.set(staged, stream=self._stream)
        else:
            from streamd.gpu.preprocess import copy_image_into

            copy_image_into(target, image, self._stream)  # an NVDEC frame's letterbox: a memcpy, no kernel

    def infer(self, images: Any) -> np.ndarray:
        batch = len(images)
        if isinstance(images, np.ndarray):  # host input (tests, gpu-check): upload first
            self._input[:batch].set(np.ascontiguousarray(images), stream=self._stream)
            device_in = self._input
        else:
            device_in = images  # a leading slice of one of its input buffers (max_batch rows)
        # Below the profile's minimum, run the minimum: the buffer has the rows (max_batch >= min).
        rows = max(batch, self.profile.min)
        device_out = self._output[:rows]
        host_out = self._host_output[:rows]
        with self._stream:  # one instance (factory): loads and the batch share this stream, in order
            self._input_shape(rows)
            self._context.set_tensor_address(INPUT_NAME, device_in.data.ptr)
            self._context.set_tensor_address(OUTPUT_NAME, device_out.data.ptr)
            if not self._context.execute_async_v3(self._stream.ptr):
                raise EngineError("TensorRT execute_async_v3 failed")
            device_out.get(stream=self._stream, out=host_out)
            self._stream.synchronize()
        return np.array(host_out[:batch])  # a copy: the pinned buffer is reused by the next batch

    def close(self) -> None:
        self._context = None
        self._engine = None
