from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

from streamd.sinks.base import Record, SinkRunner
from streamd.sinks.jsonl import JsonLinesSink


def lines(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_written_one_per_line_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "out" / "detections.jsonl"
    sink = JsonLinesSink(path, rotate_bytes=None, rotate_daily=False)
    sink.write([{"camera": "a", "seq": 0}, {"camera": "a", "seq": 1}])
    sink.close()
    reopened = JsonLinesSink(path, None, False)
    reopened.write([{"camera": "a", "seq": 2}])
    reopened.close()
    assert [r["seq"] for r in lines(path)] == [0, 1, 2]


def test_rotation_by_size_keeps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    sink = JsonLinesSink(path, rotate_bytes=200, rotate_daily=False)
    for seq in range(30):
        sink.write([{"camera": "door", "seq": seq, "pad": "x" * 20}])
    sink.close()
    files = sorted(tmp_path.glob("d*.jsonl"))
    assert len(files) > 3 and path in files
    assert all(f.stat().st_size <= 200 for f in files)
    seqs = sorted(r["seq"] for f in files for r in lines(f))
    assert seqs == list(range(30))


def test_rotation_when_the_day_changes(tmp_path: Path) -> None:
    today = [dt.datetime(2026, 11, 23, 23, 59, 58)]
    path = tmp_path / "d.jsonl"
    sink = JsonLinesSink(path, rotate_bytes=None, rotate_daily=True, clock=lambda: today[0])
    sink.write([{"seq": 1}])
    sink.write([{"seq": 2}])
    today[0] = dt.datetime(2026, 11, 24, 0, 0, 1)
    sink.write([{"seq": 3}])
    sink.close()
    rotated = tmp_path / "d-20261123-235958.jsonl"
    assert [r["seq"] for r in lines(rotated)] == [1, 2]
    assert [r["seq"] for r in lines(path)] == [3]


class StuckSink:
    """A sink whose disk hangs until released."""

    name = "stuck"
    retries = False

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[Record] = []

    def write(self, records: list[Record]) -> None:
        self.release.wait(10)
        self.written += records

    def close(self) -> None:
        pass


class FailingSink:
    name = "failing"
    retries = False

    def __init__(self) -> None:
        self.calls = 0

    def write(self, records: list[Record]) -> None:
        self.calls += 1
        if self.calls == 1:
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


def test_slow_sink_never_blocks_the_caller_and_counts_drops() -> None:
    sink = StuckSink()
    drops: list[tuple[str, str]] = []
    runner = SinkRunner(sink, queue_size=5, on_drop=lambda name, reason: drops.append((name, reason)))
    runner.start()
    start = time.monotonic()
    accepted = sum(runner.offer({"seq": i}) for i in range(100))
    assert time.monotonic() - start < 0.5, "offer must not wait for the sink"
    assert accepted + len(drops) == 100 and len(drops) >= 90
    assert set(drops) == {("stuck", "queue_full")}
    sink.release.set()
    runner.stop()
    assert len(sink.written) == accepted, "what was accepted is written before stop returns"


def test_failing_write_is_counted_and_the_sink_goes_on() -> None:
    sink = FailingSink()
    drops: list[tuple[str, str]] = []
    written: list[int] = []
    runner = SinkRunner(sink, 100, on_drop=lambda n, r: drops.append((n, r)), on_written=written.append)
    runner.start()
    runner.offer({"seq": 1})
    time.sleep(0.2)
    runner.offer({"seq": 2})
    runner.stop()
    assert drops == [("failing", "write_error")]
    assert sum(written) == 1 and sink.calls == 2
