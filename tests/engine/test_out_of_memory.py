"""The runner when memory runs out, a warm-up batch fails, or an instance keeps failing:
stand-in engines raise what ONNX Runtime and Python raise (onnxruntime's RuntimeException
with its arena's message, MemoryError) at the library's boundary."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

import streamd.engine.runner as runner_module
from streamd.engine.base import EngineError
from streamd.engine.runner import BatchResult, EngineRunner
from streamd.frames.frame import Frame
from streamd.machine.limits import read_limits
from streamd.metrics.registry import Metrics
from tests.support.engines import SlowEngine, frames

# onnxruntime/core/framework/bfc_arena.cc, as session.run raises it.
ARENA = (
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
    "Name:'Conv_0' Status Message: Failed to allocate memory for requested buffer of size {}"
)


class RunsOutAbove(SlowEngine):
    """Batches larger than `fits` run out of memory, as ONNX Runtime says it."""

    max_batch = 8

    def __init__(self, fits: int, error: type[BaseException] = RuntimeException) -> None:
        super().__init__(seconds=0.0)
        self.fits = fits
        self.error = error
        self.sizes: list[int] = []

    def infer(self, images: np.ndarray) -> np.ndarray:
        self.sizes.append(len(images))
        if len(images) > self.fits:
            raise self.error(ARENA.format(len(images) * 26214400))
        return super().infer(images)


def run_batches(runner: EngineRunner, batches: list[list[Frame]], results: list[BatchResult]) -> None:
    runner.start()
    for batch in batches:
        while not runner.has_room():
            time.sleep(0.001)
        runner.submit(batch)
    assert runner.stop(10)


def analysed(results: list[BatchResult]) -> list[int]:
    """Each delivered frame's number, paired with its own output row."""
    numbers = []
    for result in results:
        assert len(result.rows) == len(result.frames)
        for frame, rows in zip(result.frames, result.rows, strict=True):
            assert rows[0, 0] == frame.seq  # its own image's row, not a neighbour's
            numbers.append(frame.seq)
    return numbers


@pytest.mark.parametrize("error", [RuntimeException, MemoryError])
def test_out_of_memory_halves_the_batch_and_every_frame_is_analysed_once(error: type[BaseException]) -> None:
    engine = RunsOutAbove(fits=2, error=error)
    metrics = Metrics()
    results: list[BatchResult] = []
    lost: list[Frame] = []
    runner = EngineRunner([engine], results.append, lambda: None, lost.extend, metrics=metrics)
    run_batches(runner, [frames(list(range(start, start + 8))) for start in range(0, 40, 8)], results)

    assert analysed(results) == list(range(40)) and lost == []
    # 8 ran out, then 4; from then on pieces of 2, never a larger batch again.
    assert engine.sizes[:2] == [8, 4] and set(engine.sizes[2:]) == {2}
    assert metrics.registry.get_sample_value("streamd_engine_out_of_memory_total", {"instance": "1"}) == 2
    assert metrics.registry.get_sample_value("streamd_engine_batch_limit", {"instance": "1"}) == 2


def test_the_limit_grows_back_after_a_calm_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "_CALM_S", 0.2)
    engine = RunsOutAbove(fits=4)
    results: list[BatchResult] = []
    runner = EngineRunner([engine], results.append, lambda: None)
    runner.start()
    runner.submit(frames(list(range(8))))
    time.sleep(0.5)  # calm: the next batch tries 8 again
    engine.fits = 8
    runner.submit(frames(list(range(8, 16))))
    assert runner.stop(10)
    assert analysed(results) == list(range(16))
    assert engine.sizes == [8, 4, 4, 8]


def test_another_error_is_not_taken_for_memory() -> None:
    engine = SlowEngine(seconds=0.0, fail_on=1)  # "CUDA error: an illegal memory access"
    results: list[BatchResult] = []
    lost: list[Frame] = []
    runner = EngineRunner([engine], results.append, lambda: None, lost.extend)
    run_batches(runner, [frames([1, 2, 3, 4]), frames([5, 6])], results)
    assert [f.seq for f in lost] == [1, 2, 3, 4] and analysed(results) == [5, 6]
    assert engine.calls == 2, "the failed batch was not split and retried"


def test_a_warm_up_that_fails_at_the_configured_batch_starts_at_a_smaller_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = RunsOutAbove(fits=2)
    runner = EngineRunner([engine], lambda _r: None, lambda: None)
    with caplog.at_level(logging.WARNING):
        runner.warm_up()
    assert engine.sizes == [8, 4, 2]
    assert "the warm-up batch of 8 failed" in caplog.text and "starting at batches of 2" in caplog.text
    results: list[BatchResult] = []
    runner.deliver = results.append
    run_batches(runner, [frames(list(range(8)))], results)
    assert analysed(results) == list(range(8)) and engine.sizes[3:] == [2, 2, 2, 2]


def test_a_warm_up_failing_at_every_size_names_them() -> None:
    engine = RunsOutAbove(fits=0)
    with pytest.raises(EngineError) as caught:
        EngineRunner([engine], lambda _r: None, lambda: None).warm_up()
    message = str(caught.value)
    assert message.startswith("instance 1 failed a warm-up batch at every size tried: 8 (")
    assert all(f"; {size} ([ONNXRuntimeError]" in message for size in (4, 2, 1))


class Broken(SlowEngine):
    def infer(self, images: np.ndarray) -> np.ndarray:
        raise RuntimeException("[ONNXRuntimeError] : 1 : FAIL : CUDA error cudaErrorLaunchFailure")


def test_an_instance_failing_batch_after_batch_leaves_rotation_and_the_rest_take_its_share() -> None:
    broken, healthy = Broken(seconds=0.0), SlowEngine(seconds=0.002)
    metrics = Metrics()
    results: list[BatchResult] = []
    lost: list[Frame] = []
    lock = threading.Lock()

    def lose(frames_lost: list[Frame]) -> None:
        with lock:
            lost.extend(frames_lost)

    runner = EngineRunner([broken, healthy], results.append, lambda: None, lose, metrics=metrics)
    run_batches(runner, [frames([n]) for n in range(200)], results)

    assert runner.retired.keys() == {0}
    assert runner.problems() == [
        "engine instance 1 out of rotation: 5 batches in a row failed, the last: RuntimeException: "
        "[ONNXRuntimeError] : 1 : FAIL : CUDA error cudaErrorLaunchFailure"
    ]
    assert len(lost) == 5, "only the batches it failed before it was taken out"
    assert sorted(analysed(results) + [f.seq for f in lost]) == list(range(200))
    assert metrics.registry.get_sample_value("streamd_engine_instances") == 1


def test_the_last_instance_is_never_taken_out() -> None:
    runner = EngineRunner([Broken(seconds=0.0)], lambda _r: None, lambda: None)
    lost: list[Frame] = []
    runner.on_failed = lost.extend
    run_batches(runner, [frames([n]) for n in range(8)], [])
    assert runner.retired == {} and len(lost) == 8


class Holds(SlowEngine):
    """Keeps what its first batch allocated, as ONNX Runtime's arena does."""

    max_batch = 2

    def __init__(self, megabytes: int) -> None:
        super().__init__(seconds=0.0)
        self.megabytes = megabytes
        self.arena: np.ndarray | None = None
        self.closed = False

    def infer(self, images: np.ndarray) -> np.ndarray:
        if self.arena is None:
            self.arena = np.ones(self.megabytes * 2**20, np.uint8)  # touched: resident
        return super().infer(images)

    def close(self) -> None:
        self.closed = True


def test_instances_counted_by_auto_that_memory_cannot_hold_are_closed_at_warm_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engines = [Holds(64) for _ in range(4)]
    limits = read_limits()
    # Room for one more instance of what the first was measured to take: 0.7 x 120 MiB / ~64 MiB.
    monkeypatch.setattr(runner_module, "read_limits", lambda: replace(limits, memory_available=120 * 2**20))
    runner = EngineRunner(engines, lambda _r: None, lambda: None, fit_instances=True)
    with caplog.at_level(logging.WARNING):
        runner.warm_up()
    assert runner.cost is not None and 60 * 2**20 <= runner.cost.instance_bytes <= 80 * 2**20
    assert runner.engines == engines[:2] and [e.closed for e in engines] == [False, False, True, True]
    assert engines[2].arena is None, "a closed instance is not warmed up"
    assert "auto: engine.instances=2 because memory holds no more" in caplog.text
    set_by_hand = EngineRunner([Holds(64) for _ in range(4)], lambda _r: None, lambda: None)
    with pytest.raises(EngineError, match=r"lower engine\.instances or batcher\.max_batch"):
        set_by_hand.warm_up()
