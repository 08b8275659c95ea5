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

When memory runs out (`out_of_memory`: ONNX Runtime's arena, CUDA, CuPy), the instance
halves its batch limit and runs the rest of the batch in smaller pieces: every frame is
still analysed once, and later batches are split likewise; after `_CALM_S` without
running out the limit doubles again, up to the engine's batch. A warm-up that fails at
the configured batch tries halves down to 1 and starts at the largest that ran. An
instance whose batches fail `_RETIRE_AFTER` times in a row (not for memory, or for
memory at a batch of 1) is taken out of rotation while others remain: the rest take
its share, `/readyz` says why.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamd.base.failures import Failures
from streamd.base.memory import rss_bytes
from streamd.engine.base import Engine, EngineError, out_of_memory
from streamd.frames.frame import Frame
from streamd.machine.auto import MEMORY_SHARE, ModelCost
from streamd.machine.limits import read_limits
from streamd.metrics.registry import Metrics

log = logging.getLogger(__name__)

# After this long without running out of memory, an instance's halved batch limit doubles.
_CALM_S = 60.0
# Failed batches in a row after which an instance is taken out of rotation.
_RETIRE_AFTER = 5


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
        engines: Sequence[Engine],
        deliver: Callable[[BatchResult], None],
        on_room: Callable[[], None],
        on_failed: Callable[[list[Frame]], None] | None = None,
        failures: Failures | None = None,
        metrics: Metrics | None = None,
        fit_instances: bool = False,
    ) -> None:
        """`fit_instances`: the instances were counted by `auto`; at warm-up, those memory
        cannot hold are closed instead of refused."""
        if not engines:
            raise ValueError("at least one engine instance is needed")
        self.engines = list(engines)
        self.metrics = metrics
        self.fit_instances = fit_instances
        self.cost: ModelCost | None = None
        """What the first instance took at warm-up (None before, or without /proc)."""
        # Per instance: its batch limit (halved when memory runs out), when it last ran
        # out, its failures in a row; and why instances were taken out of rotation.
        self._limits = [engine.max_batch for engine in self.engines]
        self._short_since = [0.0] * len(self.engines)
        self._failing = [0] * len(self.engines)
        self.retired: dict[int, str] = {}
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

        A batch that fails is tried at half the size down to 1; the instance then starts
        at the largest that ran (its batch limit), or the error names every size tried.
        Each instance keeps what its first full batch allocated (ONNX Runtime's arena on
        a CPU holds about 17 MB per 640x640 frame), so after the first instance the rest
        are projected from what it took (`cost`): a setting that would exhaust the
        machine's memory is refused here with the numbers, instead of the kernel killing
        the daemon later; with `fit_instances` the instances that do not fit are closed.
        """
        grey = np.full((self.engine.input_height, self.engine.input_width, 3), 114, np.uint8)
        slowest = 0.0
        number = 0
        while number < len(self.engines):  # the first's warm-up may close some of the rest
            engine = self.engines[number]
            before = rss_bytes()
            images = engine.new_input_buffer()
            for index in range(engine.max_batch):
                engine.load(images, index, grey)
            seconds, batch = self._first_batch(number, engine, images)
            slowest = max(slowest, seconds)
            if number == 0:
                after = rss_bytes()
                if before is not None and after is not None:
                    self.cost = ModelCost(after - before, seconds / batch)
                if len(self.engines) > 1:
                    self._fit_the_rest()
            number += 1
        return slowest

    def _first_batch(self, number: int, engine: Engine, images: Any) -> tuple[float, int]:
        tried: list[str] = []
        size = engine.max_batch
        while True:
            start = time.perf_counter()
            try:
                engine.infer(images[:size])
            except Exception as exc:  # ONNX Runtime's and TensorRT's own error types
                tried.append(f"{size} ({exc})")
                if size == 1:
                    raise EngineError(
                        f"instance {number + 1} failed a warm-up batch at every size tried: " + "; ".join(tried)
                    ) from exc
                size //= 2
                continue
            if size < engine.max_batch:
                log.warning(
                    "engine instance %d: the warm-up batch of %d failed (%s); starting at batches of %d",
                    number + 1,
                    engine.max_batch,
                    tried[0],
                    size,
                )
                self._set_limit(number, size)
            return time.perf_counter() - start, size

    def _fit_the_rest(self) -> None:
        available = read_limits().memory_available
        if self.cost is None or available is None or self.cost.instance_bytes <= 0:
            return
        each = self.cost.instance_bytes
        needed = each * (len(self.engines) - 1)
        if needed <= MEMORY_SHARE * available:
            return
        if self.fit_instances:
            keep = max(1, 1 + int(MEMORY_SHARE * available // each))
            for engine in self.engines[keep:]:
                engine.close()
            log.warning(
                "auto: engine.instances=%d because memory holds no more: the first took %.0f MiB and %.1f GiB is "
                "available (%d started)",
                keep,
                each / 2**20,
                available / 2**30,
                len(self.engines),
            )
            del self.engines[keep:], self._limits[keep:], self._short_since[keep:], self._failing[keep:]
            return
        raise EngineError(
            f"{len(self.engines)} engine instances with batches of {self.engine.max_batch} need about "
            f"{needed / 2**30:.1f} GiB more memory (the first took {each / 2**20:.0f} MiB) "
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
            (f"engine-infer-{i}", functools.partial(self._infer, i, engine), functools.partial(self._results.put, None))
            for i, engine in enumerate(self.engines)
        ]
        if self.metrics is not None:
            self.metrics.engine_instances.set(len(self.engines))
            for number, limit in enumerate(self._limits):
                self.metrics.engine_batch_limit.labels(str(number + 1)).set(limit)
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

    def problems(self) -> list[str]:
        """Why instances are out of rotation (for /readyz)."""
        with self._lock:
            return [f"engine instance {number + 1} out of rotation: {why}" for number, why in self.retired.items()]

    def _end_assembled(self) -> None:
        # One marker: each infer stage puts it back for the next before it ends, so it
        # reaches every stage still in rotation, however many were taken out.
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

    def _infer(self, number: int, engine: Engine) -> None:
        while True:
            item = self._assembled.get()
            if item is None:
                self._assembled.put(None)  # for the next stage
                self._results.put(None)
                return
            batch, frames, buffer = item
            started_mono, start = time.monotonic(), time.perf_counter()
            result = None
            failed: Exception | None = None
            try:
                rows = self._run(number, engine, buffer, len(frames))
                result = BatchResult(frames, rows, time.perf_counter() - start, time.monotonic(), started_mono)
                self._failing[number] = 0
            except Exception as error:
                # The frames are lost but the pipeline is not: log it, count them, go on.
                log.exception("inference failed for a batch of %d on instance %d", len(frames), number + 1)
                self.on_failed(frames)
                self._failing[number] += 1
                failed = error
            self._free.put(buffer)
            with self._lock:
                self._in_flight -= 1
                self._since.pop(batch, None)
            self.on_room()
            self._results.put((batch, result))
            if failed is not None and self._failing[number] >= _RETIRE_AFTER and self._retire(number, failed):
                self._results.put(None)
                return

    def _run(self, number: int, engine: Engine, buffer: Any, count: int) -> np.ndarray:
        """`count` frames of `buffer` in pieces of at most the instance's batch limit; out
        of memory, the limit halves and the rest goes on in smaller pieces."""
        pieces: list[np.ndarray] = []
        done = 0
        while done < count:
            size = min(self._limit(number), count - done)
            try:
                # A contiguous run of the buffer's rows: TensorRT reads from its address.
                pieces.append(engine.infer(buffer[done : done + size]))
            except Exception as error:
                if size == 1 or not out_of_memory(error):
                    raise
                self._ran_out(number, size, error)
                continue
            done += size
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _limit(self, number: int) -> int:
        limit, full = self._limits[number], self.engines[number].max_batch
        if limit < full and time.monotonic() - self._short_since[number] >= _CALM_S:
            self._set_limit(number, min(full, limit * 2))
            log.info(
                "engine instance %d: batches of up to %d again (%gs without running out of memory)",
                number + 1,
                self._limits[number],
                _CALM_S,
            )
        return self._limits[number]

    def _ran_out(self, number: int, size: int, error: BaseException) -> None:
        self._set_limit(number, max(1, size // 2))
        if self.metrics is not None:
            self.metrics.engine_out_of_memory.labels(str(number + 1)).inc()
        log.warning(
            "engine instance %d ran out of memory at a batch of %d (%s): batches of at most %d from now on, "
            "doubling again after %gs without running out",
            number + 1,
            size,
            str(error).splitlines()[0][:200],
            self._limits[number],
            _CALM_S,
        )

    def _set_limit(self, number: int, limit: int) -> None:
        self._limits[number] = limit
        self._short_since[number] = time.monotonic()
        if self.metrics is not None:
            self.metrics.engine_batch_limit.labels(str(number + 1)).set(limit)

    def _retire(self, number: int, error: BaseException) -> bool:
        """Take the instance out of rotation, unless it is the last one in it."""
        with self._lock:
            if len(self.retired) + 1 >= len(self.engines):
                return False
            why = f"{_RETIRE_AFTER} batches in a row failed, the last: {type(error).__name__}: {error}"
            self.retired[number] = why[:300]
            remaining = len(self.engines) - len(self.retired)
        log.error("engine instance %d taken out of rotation (%s); %d remain", number + 1, why, remaining)
        if self.metrics is not None:
            self.metrics.engine_instances.set(remaining)
        return True

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
