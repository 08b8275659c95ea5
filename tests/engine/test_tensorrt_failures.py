"""`backend: auto` falls back to ONNX Runtime on every way TensorRT can fail, and
`backend: tensorrt` says which, through `create_engines`; and what the engine asks of
TensorRT and CUDA when it works (precision flags, pinned uploads).

There is no GPU here, so the edges are stood in for: the `tensorrt` and `cupy` modules.
They answer as TensorRT's Python binding does (pyCore.cpp, TensorRT 10 and 11): a parse
failure is `parse_from_file` returning False with errors to read, a refused shape is
`set_input_shape` returning False, an execution context or engine that cannot be made
is None, and `get_tensor_shape` has -1 where a shape was not set. CuPy's out of memory
is an exception class from `cupy.cuda.memory`; a read-only home makes `import cupy`
raise OSError (CuPy 14.1+ creates its kernel cache there when imported).
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamd.config.loader import parse_config
from streamd.engine.base import BackendUnavailable, EngineError
from streamd.engine.factory import create_engines
from streamd.model.canonical import ROW_WIDTH

pytestmark = pytest.mark.assets


class OutOfMemoryError(Exception):
    pass


OutOfMemoryError.__module__ = "cupy.cuda.memory"


class Failures:
    """What the stand-in TensorRT does wrong this time, and what it was asked."""

    def __init__(self) -> None:
        self.shapes: list[tuple[Any, Any, Any]] = []  # what the optimization profile was given
        self.network_flags: list[int] = []
        self.builder_flags: list[str] = []
        self.pinned: list[np.ndarray] = []  # what cupyx.empty_pinned gave
        self.uploads: list[tuple[np.ndarray, Any]] = []  # (host source, stream) of each set()
        self.executed: list[Any] = []  # the stream of each execute_async_v3
        self.parse = True
        self.context = True
        self.shape = True
        self.memory = True


def stand_in_tensorrt(fail: Failures) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.0"  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Parser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.num_errors = 0 if fail.parse else 1

        def parse_from_file(self, path: str) -> bool:
            return fail.parse

        def get_error(self, index: int) -> str:
            return "In node 12 (parseGraph): UNSUPPORTED_NODE: No importer registered for op: GridSample"

    class Timing:
        def serialize(self) -> bytes:
            return b"timing"

    class Config:
        def set_memory_pool_limit(self, pool: Any, size: int) -> None: ...
        def set_flag(self, flag: Any) -> None:
            fail.builder_flags.append(flag)

        def add_optimization_profile(self, profile: Any) -> int:
            return 0

        def create_timing_cache(self, data: bytes) -> Timing:
            return Timing()

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            return True

    class Profile:
        def set_shape(self, name: str, low: Any, best: Any, high: Any) -> None:
            fail.shapes.append((low, best, high))

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger: Any) -> None: ...
        def create_network(self, flags: int) -> object:
            fail.network_flags.append(flags)
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            return b"plan"

    class Context:
        def __init__(self) -> None:
            self.batch = -1

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if fail.shape:
                self.batch = shape[0]
            return fail.shape

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (self.batch, ROW_WIDTH, 25200 if self.batch > 0 else -1)

        def set_tensor_address(self, name: str, pointer: int) -> bool:
            return True

        def execute_async_v3(self, stream: Any) -> bool:
            fail.executed.append(stream)
            return True

    class Engine:
        def create_execution_context(self) -> Context | None:
            return Context() if fail.context else None

    class Runtime:
        def __init__(self, logger: Any) -> None: ...
        def deserialize_cuda_engine(self, plan: bytes) -> Engine:
            return Engine()

    for name, value in {
        "Logger": Logger,
        "Builder": Builder,
        "OnnxParser": Parser,
        "Runtime": Runtime,
        "NetworkDefinitionCreationFlag": types.SimpleNamespace(STRONGLY_TYPED=0),
        "MemoryPoolType": types.SimpleNamespace(WORKSPACE=0),
        "BuilderFlag": types.SimpleNamespace(FP16="FP16", INT8="INT8"),
    }.items():
        setattr(trt, name, value)
    return trt


class DeviceArray:
    """CuPy's ndarray as the backend uses it: slices, `.data.ptr`, `set` and `get` on a stream."""

    def __init__(self, array: np.ndarray, fail: Failures) -> None:
        self.array, self.fail = array, fail
        self.shape, self.dtype = array.shape, array.dtype
        self.data = types.SimpleNamespace(ptr=array.__array_interface__["data"][0])

    def __getitem__(self, key: Any) -> DeviceArray:
        return DeviceArray(self.array[key], self.fail)

    def __len__(self) -> int:
        return len(self.array)

    def set(self, host: np.ndarray, stream: Any = None) -> None:
        self.fail.uploads.append((host, stream))
        self.array[...] = host

    def get(self, stream: Any = None, out: np.ndarray | None = None) -> np.ndarray:
        assert out is not None
        out[...] = self.array
        return out


class Stream:
    """A CUDA stream: work queued on it runs in order."""

    def __init__(self, non_blocking: bool = False) -> None:
        self.ptr = id(self)

    def synchronize(self) -> None: ...
    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None: ...


def stand_in_cupy(fail: Failures) -> types.ModuleType:
    cupy = types.ModuleType("cupy")

    def empty(shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        if not fail.memory:
            raise OutOfMemoryError(f"Out of memory allocating {int(np.prod(shape)) * 4:,} bytes")
        return DeviceArray(np.zeros(shape, dtype), fail)

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda d: {"name": b"Stand-in"})
    cupy.cuda = types.SimpleNamespace(runtime=runtime, Stream=Stream)  # type: ignore[attr-defined]
    cupy.empty, cupy.uint8, cupy.float32 = empty, np.uint8, np.float32  # type: ignore[attr-defined]
    return cupy


@pytest.fixture
def failures(monkeypatch: pytest.MonkeyPatch) -> Failures:
    fail = Failures()
    cupyx = types.ModuleType("cupyx")

    def empty_pinned(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        fail.pinned.append(np.empty(shape, dtype))
        return fail.pinned[-1]

    cupyx.empty_pinned = empty_pinned  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(fail))
    monkeypatch.setitem(sys.modules, "cupy", stand_in_cupy(fail))
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    return fail


def engines_for(model: Path, tmp_path: Path, backend: str) -> list[Any]:
    text = f"engine: {{model: {model}, backend: {backend}, cache_dir: {tmp_path / 'cache'}}}\ncameras: []"
    config = parse_config(text, "s.yaml", env={})
    assert config.engine is not None
    return create_engines(config.engine, 8).instances


BREAKS: dict[str, tuple[Callable[[Failures], None], str]] = {
    "parse": (lambda f: setattr(f, "parse", False), "TensorRT cannot parse it"),
    "context": (lambda f: setattr(f, "context", False), "could not create an execution context"),
    "shape": (lambda f: setattr(f, "shape", False), "TensorRT refused input shape"),
    "gpu-memory": (lambda f: setattr(f, "memory", False), "OutOfMemoryError"),
    "old-tensorrt": (lambda f: setattr(sys.modules["tensorrt"], "__version__", "8.6.1"), "TensorRT 8.6.1 is too old"),
}


def test_the_stand_ins_build_a_working_engine(failures: Failures, canonical_model: Path, tmp_path: Path) -> None:
    """Unbroken, the stand-ins give a TensorRT engine: the failures below are the only difference."""
    (engine,) = engines_for(canonical_model, tmp_path, "tensorrt")
    assert engine.name == "tensorrt" and engine.max_batch == 8
    # The profile's opt is the batcher's max_batch (8 here) unless the file says otherwise.
    ((low, best, high),) = failures.shapes
    assert (low[0], best[0], high[0]) == (1, 8, 32)


@pytest.mark.parametrize("broken", list(BREAKS))
def test_auto_falls_back_to_onnxruntime_naming_the_cause(
    broken: str, failures: Failures, canonical_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    breaks, cause = BREAKS[broken]
    breaks(failures)
    with caplog.at_level(logging.INFO, logger="streamd.engine.factory"):
        engines = engines_for(canonical_model, tmp_path, "auto")
    assert engines and all(engine.name == "onnxruntime" for engine in engines)
    assert "engine.backend auto: ONNX Runtime, because TensorRT" in caplog.text and cause in caplog.text
    with pytest.raises(EngineError, match=cause):
        engines_for(canonical_model, tmp_path, "tensorrt")


@pytest.fixture
def cupy_with_a_read_only_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real `import cupy` that fails as CuPy 14.1+ does when $HOME is read-only."""
    package = tmp_path / "site" / "cupy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import errno\nraise OSError(errno.EROFS, 'Read-only file system', '/var/lib/streamd/.cupy')\n"
    )
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield


def test_an_import_that_fails_with_oserror_is_backend_unavailable(
    cupy_with_a_read_only_home: None, canonical_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(BackendUnavailable, match="CUPY_CACHE_DIR"):
        engines_for(canonical_model, tmp_path, "tensorrt")
    with caplog.at_level(logging.INFO, logger="streamd.engine.factory"):
        engines = engines_for(canonical_model, tmp_path, "auto")
    assert all(engine.name == "onnxruntime" for engine in engines)
    assert "Read-only file system" in caplog.text


@pytest.fixture
def qdq_model(canonical_model: Path, tmp_path: Path) -> Path:
    """The canonical model with a Q/DQ pair: what makes TensorRT build it as a quantized network."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(canonical_model))
    graph = model.graph
    graph.initializer.extend(
        [
            helper.make_tensor("q_scale", TensorProto.FLOAT, [], [0.1]),
            helper.make_tensor("q_zero", TensorProto.INT8, [], [0]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("QuantizeLinear", [graph.input[0].name, "q_scale", "q_zero"], ["q_out"]),
            helper.make_node("DequantizeLinear", ["q_out", "q_scale", "q_zero"], ["dq_out"]),
        ]
    )
    path = tmp_path / "int8.onnx"
    onnx.save(model, str(path))
    return path


def tensorrt_11() -> None:
    """TensorRT 11 removed the precision flags and platform_has_fast_fp16: networks are strongly typed."""
    trt = sys.modules["tensorrt"]
    trt.__version__ = "11.1.0"  # type: ignore[attr-defined]
    trt.BuilderFlag = types.SimpleNamespace()  # type: ignore[attr-defined]
    del trt.Builder.platform_has_fast_fp16


def test_a_qdq_model_runs_its_float_parts_in_fp16_where_tensorrt_has_the_flag(
    failures: Failures, qdq_model: Path, canonical_model: Path, tmp_path: Path
) -> None:
    engines_for(qdq_model, tmp_path / "10-int8", "tensorrt")
    engines_for(canonical_model, tmp_path / "10-float", "tensorrt")
    # TensorRT 10: weakly typed, INT8 where the Q/DQ pairs say and FP16 for the rest; a float model FP16.
    assert failures.network_flags == [0, 0] and failures.builder_flags == ["INT8", "FP16", "FP16"]
    tensorrt_11()
    engines_for(qdq_model, tmp_path / "11-int8", "tensorrt")
    # TensorRT 11: strongly typed (STRONGLY_TYPED is bit 0 in the stand-in), the model's own types.
    assert failures.network_flags[2:] == [1] and failures.builder_flags[3:] == []


def test_host_images_go_up_through_pinned_memory_on_the_stream_the_batch_runs_on(
    failures: Failures, canonical_model: Path, tmp_path: Path
) -> None:
    (engine,) = engines_for(canonical_model, tmp_path, "tensorrt")
    pinned_before = len(failures.pinned)
    buffer = engine.new_input_buffer()
    (staging,) = failures.pinned[pinned_before:]
    images = [np.full((640, 640, 3), value, np.uint8) for value in (7, 9)]
    for index, image in enumerate(images):
        engine.load(buffer, index, image)
    uploads = failures.uploads[-2:]
    assert all(np.shares_memory(source, staging) for source, _ in uploads), "copied up from the pinned buffer"
    assert (buffer.array[:2] == np.stack(images)).all()
    engine.infer(buffer[:2])
    (upload_stream,) = {stream for _, stream in uploads}
    assert failures.executed == [upload_stream.ptr], "the batch runs on the stream its uploads were queued on"
