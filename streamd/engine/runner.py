"""EngineRunner: runs the engine instances in threads of their own, double-buffered.

Stages, each in its own thread(s), joined by bounded queues:

    assemble (copy frames into a free input buffer) -> infer (one thread per engine
    instance) -> deliver (in submission order: postprocess, sinks)

One input buffer more than there are instances: while every instance runs a batch, the
next one is copied into the spare buffer, so no engine waits for the host. That many
batches at most are in flight; the batcher asks `has_room()` before it submits and gets
a wake-up when a batch finishes. Instances finish out of order; the deliver stage puts
results back in submission order, so each camera's records stay in order. A slow
deliver stage fills its queue and holds up inference, which holds up the batcher:
frames then wait in their slots, where newer ones replace them (counted).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.base.failures import Failures
from streamd.base.memory import available_bytes, rss_bytes
from streamd.engine.base import Engine, EngineError
from streamd.frames.frame import Frame

log = logging.getLogger(__name__)

# Share of the available memory the remaining engine instances may take at warm-up; the
# rest is for the decoders and the page cache.
_MEMORY_SHARE = 0.7


@dataclass(frozen=True)
class BatchResult:
    frames: list[Frame]
    rows: np.ndarray
    """The engine's [B, N, 15] output for `frames`."""
    inference_s: float
    finished_mono: float
    started_mono: float = 0.0
    """When the engine began this batch (monotonic)."""


class EngineRunner:
    def __init__(
        self,
        engines: list[Engine],
        deliver: Callable[[BatchResult], None],
        on_room: Callable[[], None],
        on_failed: Callable[[list[Frame]], None] | None = None,
        failures: Failures | None = None,
    ) -> None:
        if not engines:
            raise ValueError("at least one engine instance is needed")
        self.engines = engines
        self.engine = engines[0]
        self.deliver = deliver
        self.on_room = on_room
        self.on_failed = on_failed or (lambda _frames: None)
        self.failures = failures or Failures()
        self.buffers = len(engines) + 1
        # Buffers come from the engine: host memory for ONNX Runtime, device memory for
        # TensorRT (so GPU-letterboxed frames are copied device to device).
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(self.buffers):
            self._free.put(self.engine.new_input_buffer())
        # None in a queue means "stop after what came before". Batches carry their
        # submission number so results can be delivered in order; a failed batch
        # travels on as None so the order has no hole.
        self._inbox: queue.Queue[list[Frame] | None] = queue.Queue()
        self._assembled: queue.Queue[tuple[int, list[Frame], Any] | None] = queue.Queue(maxsize=1)
        self._results: queue.Queue[tuple[int, BatchResult | None] | None] = queue.Queue(maxsize=4 * len(engines))
        self._in_flight = 0
        self._submitted = 0
        self._since: dict[int, float] = {}  # batch number -> when it was submitted
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ended_infers = 0  # stop markers the deliver stage has seen

    def warm_up(self) -> float:
        """Run one full batch on every instance so no first real one is slow; returns the slowest seconds.

        Each instance keeps what its first full batch allocated (ONNX Runtime's arena on
        a CPU holds about 17 MB per 640x640 frame), so after the first instance the rest
        are projected from what it took: a setting that would exhaust the machine's memory
        is refused here with the numbers, instead of the kernel killing the daemon later.
        """
        grey = np.full((self.engine.input_height, self.engine.input_width, 3), 114, np.uint8)
        slowest = 0.0
        for number, engine in enumerate(self.engines):
            before = rss_bytes()
            images = engine.new_input_buffer()
            for index in range(engine.max_batch):
                engine.load(images, index, grey)
            start = time.perf_counter()
            try:
                engine.infer(images)
            except Exception as exc:  # ONNX Runtime's and TensorRT's own error types
                raise EngineError(f"a batch of {engine.max_batch} failed on instance {number + 1}: {exc}") from exc
            slowest = max(slowest, time.perf_counter() - start)
            if number == 0 and len(self.engines) > 1:
                self._check_memory_for_the_rest(before, rss_bytes())
        return slowest

    def _check_memory_for_the_rest(self, before: int | None, after: int | None) -> None:
        available = available_bytes()
        if before is None or after is None or available is None:
            return
        needed = (after - before) * (len(self.engines) - 1)
        if needed > _MEMORY_SHARE * available:
            raise EngineError(
                f"{len(self.engines)} engine instances with batches of {self.engine.max_batch} need about "
                f"{needed / 2**30:.1f} GiB more memory (the first took {(after - before) / 2**20:.0f} MiB) "
                f"and {available / 2**30:.1f} GiB is available: lower engine.instances or batcher.max_batch"
            )

    def start(self) -> None:
        # A stage that crashes passes the stop marker on, so the stages after it finish
        # what they hold and `stop` is not left waiting for a queue nobody feeds.
        stages: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
            ("engine-assemble", self._assemble, self._end_assembled),
            ("engine-deliver", self._deliver, self._drain_results),
        ]
        stages += [
            (f"engine-infer-{i}", functools.partial(self._infer, engine), functools.partial(self._results.put, None))
            for i, engine in enumerate(self.engines)
        ]
        threads = [
            threading.Thread(target=self.failures.guard(name, target, after_crash), name=name, daemon=True)
            for name, target, after_crash in stages
        ]
        for thread in threads:
            thread.start()
        self._threads = threads

    def has_room(self) -> bool:
        with self._lock:
            return self._in_flight < self.buffers

    def idle(self) -> bool:
        with self._lock:
            return self._in_flight == 0

    def submit(self, frames: list[Frame]) -> None:
        if len(frames) > self.engine.max_batch:
            raise ValueError(f"batch of {len(frames)} exceeds the engine's max batch {self.engine.max_batch}")
        with self._lock:
            self._in_flight += 1
            self._since[self._submitted] = time.monotonic()
            self._submitted += 1
        self._inbox.put(frames)

    def oldest_batch_age(self) -> float:
        """Seconds the oldest unfinished batch has been in the engine (0 when none)."""
        with self._lock:
            oldest = min(self._since.values(), default=None)
        return 0.0 if oldest is None else time.monotonic() - oldest

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

    def _end_assembled(self) -> None:
        for _ in self.engines:
            self._assembled.put(None)

    def _drain_results(self) -> None:
        """After a deliver crash: take results until every infer stage has ended, so none blocks."""
        while self._ended_infers < len(self.engines):
            if self._results.get() is None:
                self._ended_infers += 1

    def _assemble(self) -> None:
        number = 0
        while True:
            frames = self._inbox.get()
            if frames is None:
                self._end_assembled()
                return
            buffer = self._free.get()
            for index, frame in enumerate(frames):
                self.engine.load(buffer, index, frame.image)
            self._assembled.put((number, frames, buffer))
            number += 1

    def _infer(self, engine: Engine) -> None:
        while True:
            item = self._assembled.get()
            if item is None:
                self._results.put(None)
                return
            number, frames, buffer = item
            started_mono, start = time.monotonic(), time.perf_counter()
            result = None
            try:
                rows = engine.infer(buffer[: len(frames)])
                result = BatchResult(frames, rows, time.perf_counter() - start, time.monotonic(), started_mono)
            except Exception:
                # The frames are lost but the pipeline is not: log it, count them, go on.
                log.exception("inference failed for a batch of %d", len(frames))
                self.on_failed(frames)
            self._free.put(buffer)
            with self._lock:
                self._in_flight -= 1
                self._since.pop(number, None)
            self.on_room()
            self._results.put((number, result))

    def _deliver(self) -> None:
        pending: dict[int, BatchResult | None] = {}
        next_number = 0
        while self._ended_infers < len(self.engines):
            item = self._results.get()
            if item is None:
                self._ended_infers += 1
                continue
            pending[item[0]] = item[1]
            while next_number in pending:
                self._deliver_one(pending.pop(next_number))
                next_number += 1
        # A crashed infer stage leaves a hole in the numbering: what came after it still goes out.
        for number in sorted(pending):
            self._deliver_one(pending[number])

    def _deliver_one(self, result: BatchResult | None) -> None:
        if result is None:
            return
        try:
            self.deliver(result)
        except Exception as error:  # noqa: BLE001 - reported: logged once, counted, not ready
            self.failures.report("engine-deliver", error)
