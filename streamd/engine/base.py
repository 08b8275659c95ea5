"""The engine contract: a batch of letterboxed uint8 images in, canonical rows out."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class EngineError(RuntimeError):
    """The engine cannot be created or cannot run; the message says why."""


class Engine(Protocol):
    name: str
    input_height: int
    input_width: int
    max_batch: int

    def infer(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W, 3] uint8 -> [B, N, 15] float32. Blocking; call from one thread."""
        ...

    def close(self) -> None: ...
