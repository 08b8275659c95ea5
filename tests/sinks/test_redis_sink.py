"""The Redis Streams sink against a real redis-server on loopback: exact contents, the
MAXLEN cap, an outage that loses nothing up to the queue's bound and counts beyond it,
and a real daemon whose streams hold exactly the records it counted."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from streamd.sinks.base import Record, SinkRunner
from streamd.sinks.redis_streams import RedisStreamSink
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import system_binary
from tests.support.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(system_binary("redis-server", "redis-server"), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def record(camera: str, seq: int) -> Record:
    face = {"box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "landmarks": [[1.0, 1.0]] * 5}
    return {"camera": camera, "seq": seq, "latency_s": 0.05, "faces": [face]}


class Tally:
    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}
        self.written = 0

    def runner(self, sink: RedisStreamSink, queue: int) -> SinkRunner:
        return SinkRunner(sink, queue, on_drop=self._drop, on_written=self._write)

    def _drop(self, _sink: str, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def _write(self, count: int) -> None:
        self.written += count


def seqs_in(server: RedisServer, stream: str) -> list[int]:
    return [int(fields["seq"]) for _, fields in server.client().xrange(stream)]


def test_each_record_is_one_entry_in_its_cameras_stream(redis_server: RedisServer) -> None:
    tally = Tally()
    runner = tally.runner(RedisStreamSink(redis_server.url, "streamd:{camera}", 100_000, 2.0), 1000)
    runner.start()
    for seq in range(300):
        runner.offer(record(("door", "yard", "lobby")[seq % 3], seq))
    assert runner.stop(10)
    assert tally.written == 300 and tally.dropped == {}
    assert seqs_in(redis_server, "streamd:door") == list(range(0, 300, 3))
    assert seqs_in(redis_server, "streamd:lobby") == list(range(2, 300, 3))
    _, fields = redis_server.client().xrange("streamd:yard", count=1)[0]
    assert fields["camera"] == "yard" and fields["seq"] == "1" and float(fields["latency_s"]) == 0.05
    assert json.loads(fields["faces"]) == record("yard", 1)["faces"]


def test_maxlen_caps_the_stream_to_about_maxlen(redis_server: RedisServer) -> None:
    runner = Tally().runner(RedisStreamSink(redis_server.url, "all", 150, 2.0), 5000)
    runner.start()
    for seq in range(2000):
        runner.offer(record("door", seq))
    assert runner.stop(10)
    length = redis_server.client().xlen("all")
    # Approximate trimming removes whole nodes (100 entries): between maxlen and one node more.
    assert 150 <= length < 250, length
    assert seqs_in(redis_server, "all")[-1] == 1999, "the newest are kept"


def test_an_outage_within_the_queue_loses_nothing_and_beyond_it_counts_exactly(redis_server: RedisServer) -> None:
    tally = Tally()
    runner = tally.runner(RedisStreamSink(redis_server.url, "out", 100_000, 1.0), 300)
    runner.start()
    for seq in range(100):
        runner.offer(record("door", seq))
    time.sleep(0.5)
    redis_server.kill()
    for seq in range(100, 350):  # 250 during the outage: within the queue of 300
        runner.offer(record("door", seq))
        time.sleep(0.002)
    assert runner.problem() is not None and "Redis" in str(runner.problem())
    redis_server.start()  # same port, same append-only file
    for seq in range(350, 400):
        runner.offer(record("door", seq))
    assert runner.stop(15)
    assert tally.dropped == {} and tally.written == 400
    assert seqs_in(redis_server, "out") == list(range(400)), "nothing lost, nothing twice, in order"

    # Beyond the bound: a second outage with 1,000 records offered to a queue of 300.
    runner = (tally := Tally()).runner(RedisStreamSink(redis_server.url, "out2", 100_000, 1.0), 300)
    runner.start()
    redis_server.kill()
    for seq in range(1000):
        runner.offer(record("door", seq))
    redis_server.start()
    assert runner.stop(15)
    kept = seqs_in(redis_server, "out2")
    assert tally.written == len(kept) and tally.dropped["queue_full"] == 1000 - len(kept)
    assert 300 <= len(kept) <= 300 + 256, "the queue, plus the group the runner held when it failed"


@pytest.mark.assets
def test_a_daemons_streams_hold_exactly_the_records_it_counted(
    redis_server: RedisServer, canonical_model: Path, test_video: Path, tmp_path: Path
) -> None:
    config = tmp_path / "streams.yaml"
    out = tmp_path / "out.jsonl"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{free_port()}}}\n"
        f"engine: {{model: {canonical_model}, threads: 1}}\n"
        f"sinks: [{{path: {out}}}, {{type: redis, url: '{redis_server.url}', stream: 'cam:{{camera}}'}}]\n"
        "cameras:\n"
        f"  - {{id: door, url: '{test_video}', fps: 5}}\n"
        f"  - {{id: yard, url: '{test_video}', fps: 5}}\n"
    )
    process = spawn_streamd(config)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 20):
            assert process.poll() is None, "streamd exited early"
            time.sleep(0.3)
        stderr = stop_daemon(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    counted = re.search(r"sink redis-1 stopped: (\d+) record\(s\) written, 0 dropped", stderr)
    assert counted, stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    client = redis_server.client()
    assert client.xlen("cam:door") + client.xlen("cam:yard") == int(counted.group(1)) == len(lines)
    assert seqs_in(redis_server, "cam:door") == [r["seq"] for r in lines if r["camera"] == "door"]
