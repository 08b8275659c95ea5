"""Stand-in engines' share of the engine contract."""

from __future__ import annotations

import threading
import time

import numpy as np

from streamd.frames.frame import Frame


class HostBufferEngine:
    """Stand-in engines' share of the engine contract: input buffers in host memory."""

    input_height = input_width = 640
    max_batch = 1
    on_gpu = False

    def new_input_buffer(self) -> np.ndarray:
        return np.empty((self.max_batch, self.input_height, self.input_width, 3), np.uint8)

    def load(self, buffer: np.ndarray, index: int, image: np.ndarray) -> None:
        buffer[index] = image


class SlowEngine(HostBufferEngine):
    name = "slow"
    input_height = input_width = 8
    max_batch = 4

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def infer(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            call = self.calls
        time.sleep(self.seconds)
        with self._lock:
            self.concurrent -= 1
        if call == self.fail_on:
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        # One row per image holding the image's first pixel value, to check the pairing.
        rows = np.zeros((len(images), 1, 15), np.float32)
        rows[:, 0, 0] = images[:, 0, 0, 0]
        return rows

    def close(self) -> None:
        pass


def frames(values: list[int]) -> list[Frame]:
    return [Frame("c", v, 0.0, 0.0, 0.0, 8, 8, np.full((8, 8, 3), v, np.uint8)) for v in values]
