"""EngineRunner: runs the engine in threads of its own, double-buffered.

Three stages, each a thread, joined by bounded queues:

    assemble (copy frames into a free input buffer) -> infer -> postprocess + deliver

Two input buffers: while batch k runs, batch k+1 is copied into the other buffer, so
the engine never waits for the host. At most two batches are in flight; the batcher
asks `has_room()` before it submits, and gets a wake-up when a batch finishes. A slow
postprocess fills its queue and holds up inference, which holds up the batcher: frames
then wait in their slots, where newer ones replace them (counted), instead of queueing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamd.engine.base import Engine
from streamd.frame import Frame

log = logging.getLogger(__name__)

BUFFERS = 2


@dataclass(frozen=True)
class BatchResult:
    frames: list[Frame]
    rows: np.ndarray
    """The engine's [B, N, 15] output for `frames`."""
    inference_s: float
    finished_mono: float


class EngineRunner:
    def __init__(
        self,
        engine: Engine,
        deliver: Callable[[BatchResult], None],
        on_room: Callable[[], None],
    ) -> None:
        self.engine = engine
        self.deliver = deliver
        self.on_room = on_room
        shape = (engine.max_batch, engine.input_height, engine.input_width, 3)
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(np.empty(shape, dtype=np.uint8))
        # None in a queue means "stop after what came before".
        self._inbox: queue.Queue[list[Frame] | None] = queue.Queue()
        self._assembled: queue.Queue[tuple[list[Frame], np.ndarray] | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[BatchResult | None] = queue.Queue(maxsize=4)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def warm_up(self) -> float:
        """Run one full batch so the first real one is not slow; returns its seconds."""
        images = np.full((self.engine.max_batch, self.engine.input_height, self.engine.input_width, 3), 114, np.uint8)
        start = time.perf_counter()
        self.engine.infer(images)
        return time.perf_counter() - start

    def start(self) -> None:
        for name, target in (("assemble", self._assemble), ("infer", self._infer), ("deliver", self._deliver)):
            thread = threading.Thread(target=target, name=f"engine-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def has_room(self) -> bool:
        with self._lock:
            return self._in_flight < BUFFERS

    def submit(self, frames: list[Frame]) -> None:
        if len(frames) > self.engine.max_batch:
            raise ValueError(f"batch of {len(frames)} exceeds the engine's max batch {self.engine.max_batch}")
        with self._lock:
            self._in_flight += 1
        self._inbox.put(frames)

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish every submitted batch, deliver it, then stop. True if all stopped in time."""
        if not self._threads:
            return True
        self._inbox.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stopped = not any(thread.is_alive() for thread in self._threads)
        if not stopped:
            log.warning("engine threads did not finish within %.0fs", timeout)
        self._threads = []
        return stopped

    # -- stages ------------------------------------------------------------------

    def _assemble(self) -> None:
        while True:
            frames = self._inbox.get()
            if frames is None:
                self._assembled.put(None)
                return
            buffer = self._free.get()
            for index, frame in enumerate(frames):
                buffer[index] = frame.image
            self._assembled.put((frames, buffer))

    def _infer(self) -> None:
        while True:
            item = self._assembled.get()
            if item is None:
                self._results.put(None)
                return
            frames, buffer = item
            start = time.perf_counter()
            try:
                rows = self.engine.infer(buffer[: len(frames)])
            except Exception:
                # The frames are lost but the pipeline is not: log it and go on.
                log.exception("inference failed for a batch of %d", len(frames))
                rows = None
            elapsed = time.perf_counter() - start
            self._free.put(buffer)
            with self._lock:
                self._in_flight -= 1
            self.on_room()
            if rows is not None:
                self._results.put(BatchResult(frames, rows, elapsed, time.monotonic()))

    def _deliver(self) -> None:
        while True:
            result = self._results.get()
            if result is None:
                return
            try:
                self.deliver(result)
            except Exception:
                log.exception("delivering a batch of results failed")
