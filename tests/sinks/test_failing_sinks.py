"""Sinks on a misbehaving file system: failure episodes, reopening, full disks.

The file system is real (a directory removed under the sink, a file renamed away, a
small tmpfs that fills up); the only stand-ins are a sink that raises for a while and a
clock, to drive the episode logic through its summaries without waiting a minute.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from streamd.sinks.base import CALM_S, Record, SinkRunner
from streamd.sinks.jsonl import JsonLinesSink


def record(seq: int, padding: int = 0) -> Record:
    return {"camera": "cam", "seq": seq, "faces": [], "pad": "x" * padding}


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class BrokenDisk:
    """A sink whose writes fail while `broken` is set (the edge: a disk, not the runner)."""

    name = "disk"
    retries = False

    def __init__(self) -> None:
        self.broken = False
        self.written: list[Record] = []

    def write(self, records: list[Record]) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        self.written += records

    def close(self) -> None:
        pass


class Tally:
    def __init__(self) -> None:
        self.dropped = 0
        self.written = 0
        self.health: list[bool] = []

    def runner(self, sink: BrokenDisk, clock: list[float]) -> SinkRunner:
        """A started runner: `through` hands it a group and waits until its thread took it."""
        runner = SinkRunner(
            sink,
            1000,
            on_drop=lambda _name, reason: self._drop(reason),
            on_written=self._written,
            on_health=self.health.append,
            summary_every_s=60.0,
            clock=lambda: clock[0],
        )
        runner.start()
        return runner

    def through(self, runner: SinkRunner, records: list[Record]) -> None:
        """Offer one group and wait until the runner's thread wrote or dropped all of it:
        one write of the group, at the clock's time now, as records arrive in production."""
        settled = self.dropped + self.written + len(records)
        runner.offer_many(records)
        deadline = time.monotonic() + 10
        while self.dropped + self.written < settled:
            assert time.monotonic() < deadline, "the runner's thread took the group"
            time.sleep(0.001)

    def _drop(self, reason: str) -> None:
        assert reason == "write_error"
        self.dropped += 1

    def _written(self, count: int) -> None:
        self.written += count


def test_a_failure_episode_is_logged_once_summarised_and_closed_with_exact_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, tally, clock = BrokenDisk(), Tally(), [0.0]
    runner = tally.runner(sink, clock)
    sink.broken = True
    with caplog.at_level(logging.INFO, logger="streamd.sinks"):
        # Drive the runner's write step directly, one group per "second", as its thread would.
        for second in range(150):
            clock[0] = float(second)
            tally.through(runner, [record(second * 2), record(second * 2 + 1)])
            if second == 10:
                assert runner.problem() is not None and "No space left" in str(runner.problem())
        sink.broken = False
        clock[0] = 150.0
        tally.through(runner, [record(300)])
        assert runner.problem() is not None, "one write is not yet the end of the episode"
        clock[0] = 150.0 + CALM_S
        tally.through(runner, [record(301)])
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "writing failed" in m]) == 1, "the episode's start is logged once"
    assert not any(r.exc_info for r in caplog.records), "an OSError is the machine's: no traceback"
    summaries = [m for m in messages if "still failing" in m]
    assert len(summaries) == 2, summaries  # at 60 s and 120 s
    # Each summary counts the records since the one before, the write that prompts it included.
    assert "122 record(s) dropped in the last 60s, 122 since it started 60s ago" in summaries[0]
    assert "120 record(s) dropped in the last 60s, 242 since it started 120s ago" in summaries[1]
    assert any(f"writing again after {150 + CALM_S:.0f}s; 300 record(s) were dropped" in m for m in messages)
    assert tally.dropped == 300 and tally.written == 2 and sink.written == [record(300), record(301)]
    assert tally.health == [True, False, True]
    assert runner.problem() is None
    assert runner.stop(5)


def test_a_bug_in_a_sink_is_logged_with_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    class Buggy(BrokenDisk):
        def write(self, records: list[Record]) -> None:
            raise KeyError("faces")

    tally, clock = Tally(), [0.0]
    runner = tally.runner(Buggy(), clock)
    with caplog.at_level(logging.ERROR, logger="streamd.sinks"):
        for seq in range(20):
            tally.through(runner, [record(seq)])
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    assert tally.dropped == 20
    assert runner.stop(5)


def test_a_removed_directory_is_recreated_and_a_renamed_file_replaced(tmp_path: Path) -> None:
    path = tmp_path / "out" / "detections.jsonl"
    sink = JsonLinesSink(path, rotate_bytes=None, rotate_daily=False)
    sink.write([record(1)])
    shutil.rmtree(path.parent)  # an operator clearing the directory
    sink.write([record(2)])
    assert [r["seq"] for r in read_lines(path)] == [2]
    moved = tmp_path / "out" / "detections.1.jsonl"
    os.rename(path, moved)  # logrotate without copytruncate
    sink.write([record(3)])
    sink.close()
    assert [r["seq"] for r in read_lines(moved)] == [2]
    assert [r["seq"] for r in read_lines(path)] == [3]


def test_a_full_disk_leaves_no_torn_line_and_every_record_is_counted_once(small_tmpfs: Path) -> None:
    path = small_tmpfs / "detections.jsonl"
    dropped: list[str] = []
    written: list[int] = []
    runner = SinkRunner(
        JsonLinesSink(path, rotate_bytes=None, rotate_daily=False),
        100_000,
        on_drop=lambda _name, reason: dropped.append(reason),
        on_written=written.append,
    )
    runner.start()
    offered = 2000  # about 300 KB of records into 64 KiB
    for seq in range(offered):
        runner.offer(record(seq, padding=100))
    assert runner.stop(30)
    text = path.read_text()
    assert text.endswith("\n"), "no torn last line"
    lines = read_lines(path)  # every line parses
    assert len(lines) == sum(written) > 0
    assert len(lines) + len(dropped) == offered and set(dropped) == {"write_error"}
    seqs = [int(str(r["seq"])) for r in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_nearly_full_disk_that_takes_some_writes_is_one_episode(caplog: pytest.LogCaptureFixture) -> None:
    sink, tally, clock = BrokenDisk(), Tally(), [0.0]
    runner = tally.runner(sink, clock)
    with caplog.at_level(logging.INFO, logger="streamd.sinks"):
        # A write fails, the next one fits, the one after fails again: five times a second.
        for step in range(100):
            clock[0] = step * 0.2
            sink.broken = step % 2 == 0
            tally.through(runner, [record(step)])
        assert runner.problem() is not None
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "writing failed" in m]) == 1, messages
    assert not [m for m in messages if "writing again" in m], messages
    assert tally.health == [True, False]
    assert runner.stop(5)
