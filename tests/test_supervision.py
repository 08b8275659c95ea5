"""No crash is silent: each component's crash is logged once, counted, and stops readiness.

Faults are injected at the edges only (a stand-in engine, sink, clock, callback or
notifier that raises); the component under test is the real one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamd.analysis.batcher import BatchPolicy, DynamicBatcher
from streamd.analysis.discard import DiscardingConsumer
from streamd.base.failures import Failures
from streamd.camera.slot import LatestFrameSlot
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.engine.runner import BatchResult, EngineRunner
from streamd.frames.frame import Frame
from streamd.monitor.rates import RateClock
from streamd.monitor.systemd import Notifier
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.sinks.base import Record, SinkRunner
from tests.support.engines import SlowEngine, frames
from tests.support.waiting import run, wait_for


class CountingFailures(Failures):
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        super().__init__(lambda component: self.counts.__setitem__(component, self.counts.get(component, 0) + 1))


def crash_logs(caplog: pytest.LogCaptureFixture, component: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"{component} crashed") and r.exc_info]


class LoadFails(SlowEngine):
    def load(self, buffer: np.ndarray, index: int, image: np.ndarray) -> None:
        raise RuntimeError("cudaMemcpy failed (simulated)")


class TooFewRows(SlowEngine):
    def infer(self, images: np.ndarray) -> np.ndarray:
        return super().infer(images)[:-1]


def submit_all(runner: EngineRunner, batches: list[list[int]]) -> None:
    for batch in batches:
        deadline = time.monotonic() + 5
        while not runner.has_room() and time.monotonic() < deadline:
            time.sleep(0.005)
        if runner.has_room():
            runner.submit(frames(batch))


def test_an_assemble_crash_is_reported_and_stop_still_returns(caplog: pytest.LogCaptureFixture) -> None:
    failures = CountingFailures()
    runner = EngineRunner([LoadFails()], lambda _result: None, lambda: None, failures=failures)
    runner.start()
    submit_all(runner, [[1], [2]])
    assert runner.stop(timeout=5), "the crashed stage passed the stop marker on"
    assert failures.counts == {"engine-assemble": 1}
    assert len(crash_logs(caplog, "engine-assemble")) == 1


def test_an_infer_crash_is_reported_and_the_other_instance_delivers_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    failures = CountingFailures()
    delivered: list[BatchResult] = []
    calls = {"room": 0}

    def on_room() -> None:  # the edge: the first wake-up call raises
        calls["room"] += 1
        if calls["room"] == 1:
            raise RuntimeError("event loop closed (simulated)")

    runner = EngineRunner([SlowEngine(0.01), SlowEngine(0.01)], delivered.append, on_room, failures=failures)
    runner.start()
    submit_all(runner, [[1], [2], [3], [4]])
    assert runner.stop(timeout=5)
    assert set(failures.counts) <= {"engine-infer-0", "engine-infer-1"} and sum(failures.counts.values()) == 1
    values = [int(r.rows[0, 0, 0]) for r in delivered]
    assert len(values) == 3 and values == sorted(values), "every batch but the crashed one, in order"


def test_a_deliver_crash_is_reported_once_counted_each_time_and_stop_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = CountingFailures()
    delivered: list[int] = []

    def deliver(result: BatchResult) -> None:
        for frame, _row in zip(result.frames, result.rows, strict=True):  # too few rows: raises
            delivered.append(frame.seq)

    runner = EngineRunner([TooFewRows(0.0)], deliver, lambda: None, failures=failures)
    runner.start()
    submit_all(runner, [[1, 2], [3, 4], [5, 6]])
    assert runner.stop(timeout=5)
    assert failures.counts == {"engine-deliver": 3}
    assert len(crash_logs(caplog, "engine-deliver")) == 1


def test_engine_errors_are_counted_as_dropped_frames() -> None:
    lost: list[Frame] = []
    runner = EngineRunner([SlowEngine(0.0, fail_on=2)], lambda _r: None, lambda: None, on_failed=lost.extend)
    runner.start()
    submit_all(runner, [[1], [2, 3], [4]])
    assert runner.stop(timeout=5)
    assert [f.seq for f in lost] == [2, 3]


def test_a_batcher_crash_is_reported_and_its_stop_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    failures = CountingFailures()

    def broken_clock() -> float:
        raise OSError("clock_gettime failed (simulated)")

    async def scenario() -> None:
        slot: LatestFrameSlot[Frame] = LatestFrameSlot(asyncio.get_running_loop())
        runner = EngineRunner([SlowEngine(0.0)], lambda _r: None, lambda: None)
        batcher = DynamicBatcher(BatchPolicy(4, 0.01, 1.0), runner, lambda _f: None, broken_clock, failures)
        batcher.attach("c", slot)
        batcher.start()
        slot.put(frames([1])[0])
        await wait_for(lambda: "batcher" in failures.failed, 5, "the crash report")
        await batcher.stop()  # used to re-raise the task's exception and abort Detector.stop

    run(scenario())
    assert failures.counts == {"batcher": 1}
    assert len(crash_logs(caplog, "batcher")) == 1


class RaisingCounter:
    def __call__(self, count: int) -> None:
        raise ValueError("metrics registry closed (simulated)")


class MemorySink:
    name = "memory"
    retries = False

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    def write(self, records: list[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        self.closed = True


def test_a_sink_thread_crash_is_reported_and_stop_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    failures = CountingFailures()
    sink = MemorySink()
    runner = SinkRunner(sink, 4, lambda _s, _r: None, on_written=RaisingCounter(), failures=failures)
    runner.start()
    runner.offer({"n": 1})
    deadline = time.monotonic() + 5
    while "sink-memory" not in failures.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    runner.stop(timeout=1)
    assert time.monotonic() - started < 2
    assert failures.counts == {"sink-memory": 1} and sink.closed
    assert len(crash_logs(caplog, "sink-memory")) == 1


def test_a_rate_clock_crash_is_reported() -> None:
    failures = CountingFailures()

    def sources() -> list[Any]:
        raise RuntimeError("sources gone (simulated)")

    async def scenario() -> None:
        clock = RateClock(sources, failures=failures)
        clock.start()
        await wait_for(lambda: "rate-clock" in failures.failed, 5, "the crash report")
        await clock.stop()

    run(scenario())
    assert failures.counts == {"rate-clock": 1}


class RecordingNotifier(Notifier):
    """The systemd edge: records what would be sent; `status` can be made to raise."""

    def __init__(self, fail_status: bool = False) -> None:
        super().__init__(env={"WATCHDOG_USEC": "200000"})
        self.sent: list[str] = []
        self.fail_status = fail_status

    def send(self, **fields: str) -> None:
        self.sent.extend(fields)

    def status(self, text: str) -> None:
        if self.fail_status:
            raise BrokenPipeError("notify socket gone (simulated)")
        super().status(text)

    def pings(self) -> int:
        return self.sent.count("WATCHDOG")


class CrashingConverter(DiscardingConsumer):
    """A consumer whose frame conversion raises: the camera source's decode session crashes."""

    def convert(self, frame: Any) -> Any:
        raise ValueError("unsupported layout (simulated)")


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(("component", "fail_status"), [("camera-cam", False), ("health", True)])
def test_a_crash_in_the_daemon_makes_it_unready_stops_the_pings_and_it_still_stops(
    test_video: Path, caplog: pytest.LogCaptureFixture, component: str, fail_status: bool
) -> None:
    config = StreamsConfig.model_validate(
        {"cameras": [{"id": "cam", "url": str(test_video), "backoff": {"initial_s": 0.05, "max_s": 0.1}}]}
    )
    caplog.set_level(logging.INFO)
    notifier = RecordingNotifier(fail_status)
    consumer = DiscardingConsumer() if fail_status else CrashingConverter()

    async def scenario() -> tuple[int, int, int, str]:
        daemon = Daemon(
            LoadedConfig(config),
            DaemonOptions(consumer=consumer, metrics_port=0, notifier=notifier, watch_config=False),
        )
        await daemon.start()
        try:
            await wait_for(lambda: component in daemon.failures.failed, 10, f"{component}'s crash report")
            if component.startswith("camera"):
                # Crashes again on every retry: counted each time, logged once.
                await wait_for(
                    lambda: daemon.metrics.component_failures.labels(component)._value.get() >= 3, 10, "repeats"
                )
            code = await asyncio.to_thread(readyz, daemon.http.port)
            pings = notifier.pings()
            await asyncio.sleep(1.0)  # five watchdog intervals
            return code, pings, notifier.pings(), daemon.health.ready()[1]
        finally:
            await daemon.stop()

    code, pings_before, pings_after, why = run(scenario())
    assert code == 503 and f"{component} crashed" in why
    assert pings_after == pings_before, "no watchdog ping after the crash"
    assert len(crash_logs(caplog, component)) == 1
    assert "streamd stopped" in caplog.text
