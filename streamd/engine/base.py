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
