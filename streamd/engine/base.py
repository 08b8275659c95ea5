"""The engine contract: a batch of letterboxed uint8 images in, canonical rows out."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from streamd.base.errors import ErrorKind, StreamdError


class EngineError(StreamdError, RuntimeError):
    """The engine cannot be created or cannot run; the message says why."""

    kind = ErrorKind.engine


class BackendUnavailable(EngineError):
    """The backend cannot exist here (package or GPU missing), as opposed to misconfigured."""


class Engine(Protocol):
    name: str
    input_height: int
    input_width: int
    max_batch: int
    on_gpu: bool
    """True when its input lives in GPU memory (then NVDEC frames can stay on the GPU)."""

    def new_input_buffer(self) -> Any:
        """A [max_batch, H, W, 3] uint8 buffer where this engine reads its input."""
        ...

    def load(self, buffer: Any, index: int, image: Any) -> None:
        """Copy one letterboxed image (host or device array) into `buffer[index]`."""
        ...

    def infer(self, images: Any) -> np.ndarray:
        """`images`: a leading slice of one of its input buffers -> [B, 15, N] float32 planes.

        Blocking; each instance is called from one thread.
        """
        ...

    def close(self) -> None: ...


# What the backends say when memory runs out: ONNX Runtime's arena (onnxruntime/core/
# framework/bfc_arena.cc: "Failed to allocate memory for requested buffer of size N", as
# RuntimeException or Fail), its CUDA provider ("CUDA failure 2: out of memory",
# cuBLAS/cuDNN "..._ALLOC_FAILED"), C++'s std::bad_alloc; CuPy raises
# cupy.cuda.memory.OutOfMemoryError, Python MemoryError.
_OUT_OF_MEMORY_SAYINGS = (
    "failed to allocate memory",
    "out of memory",
    "alloc_failed",
    "bad_alloc",
    "bad allocation",
)


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the engine running out of memory."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, MemoryError) or type(seen).__name__ == "OutOfMemoryError":
            return True
        if any(saying in str(seen).lower() for saying in _OUT_OF_MEMORY_SAYINGS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
