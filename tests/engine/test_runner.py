"""EngineRunner's pipeline with a stand-in engine (the engine is the edge here)."""

from __future__ import annotations

import threading
import time

from streamd.engine.runner import BatchResult, EngineRunner
from tests.support.engines import SlowEngine, frames


def test_results_pair_with_their_frames_and_stop_drains_everything() -> None:
    results: list[BatchResult] = []
    engine = SlowEngine()
    runner = EngineRunner([engine], results.append, on_room=lambda: None)
    runner.start()
    submitted = 0
    for batch in ([1, 2, 3], [4], [5, 6], [7, 8, 9, 10]):
        while not runner.has_room():
            time.sleep(0.005)
        runner.submit(frames(batch))
        submitted += len(batch)
    assert runner.stop()
    delivered = [(f.seq, int(r[0, 0])) for result in results for f, r in zip(result.frames, result.rows, strict=True)]
    assert delivered == [(v, v) for v in range(1, 11)]
    assert engine.max_concurrent == 1  # one instance runs one batch at a time


def test_at_most_two_batches_in_flight_and_room_is_announced() -> None:
    engine = SlowEngine(seconds=0.1)
    announced = threading.Event()
    runner = EngineRunner([engine], lambda result: None, on_room=announced.set)
    runner.start()
    for _ in range(runner.buffers):
        assert runner.has_room()
        runner.submit(frames([1]))
    assert not runner.has_room()
    assert announced.wait(2) and runner.has_room()
    runner.stop()


def test_a_failing_batch_is_logged_and_the_next_one_still_runs() -> None:
    results: list[BatchResult] = []
    runner = EngineRunner([SlowEngine(seconds=0.01, fail_on=1)], results.append, on_room=lambda: None)
    runner.start()
    runner.submit(frames([1]))
    runner.submit(frames([2]))
    runner.stop()
    assert [f.seq for r in results for f in r.frames] == [2]


def test_parallel_instances_deliver_in_submission_order() -> None:
    results: list[BatchResult] = []
    # The first instance is slow, the second fast: batches finish out of order.
    engines = [SlowEngine(seconds=0.15), SlowEngine(seconds=0.01)]
    runner = EngineRunner(engines, results.append, on_room=lambda: None)
    runner.start()
    assert runner.buffers == 3
    for value in range(1, 7):
        while not runner.has_room():
            time.sleep(0.002)
        runner.submit(frames([value]))
    runner.stop()
    assert [f.seq for r in results for f in r.frames] == [1, 2, 3, 4, 5, 6]
    assert engines[0].calls >= 1 and engines[1].calls >= 2, "both instances must have worked"
