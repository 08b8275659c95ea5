"""The MQTT sink against a real mosquitto on loopback: one message per record, the
retained availability (with the Last Will after a SIGKILL) and camera states, a broker
restart that loses nothing up to the queue's bound, and exact counts beyond it."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.testing.ports import free_port
from streamd.config.schema import MqttSinkConfig
from streamd.sinks.base import Record, SinkRunner
from streamd.sinks.mqtt import MqttSink
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import system_binary
from tests.support.mqtt import Mosquitto, Subscriber


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(system_binary("mosquitto", "mosquitto"), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def record(seq: int, camera: str = "door") -> Record:
    return {"camera": camera, "seq": seq, "faces": [] if seq % 2 else [{"score": 0.9}]}


def runner_for(port: int, queue: int, counts: dict[str, int], **settings: Any) -> SinkRunner:
    config = MqttSinkConfig(type="mqtt", port=port, keepalive_s=5, timeout_s=2, **settings)

    def dropped(_sink: str, reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1

    def written(count: int) -> None:
        counts["written"] = counts.get("written", 0) + count

    return SinkRunner(MqttSink(config), queue, on_drop=dropped, on_written=written)


def test_one_message_per_record_and_availability_online_then_offline(broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port)
    counts: dict[str, int] = {}
    runner = runner_for(broker.port, 1000, counts)
    runner.start()
    until(lambda: subscriber.last("streamd/available") == "online", 10, "online")
    runner.camera_states({"door": "streaming"})
    for seq in range(300):
        runner.offer(record(seq))
    assert runner.stop(15)
    until(lambda: len(subscriber.faces()) >= 300 and subscriber.last("streamd/available") == "offline", 10, "all")
    subscriber.close()
    assert sorted(r["seq"] for r in subscriber.faces()) == list(range(300)), "each record exactly once"
    assert subscriber.last("streamd/door/state") == "streaming"
    assert counts == {"written": 300}

    # Retained: a subscriber that comes later still learns both.
    late = Subscriber(broker.port, client_id="late")
    until(lambda: late.last("streamd/available") == "offline" and late.last("streamd/door/state") is not None, 10, "x")
    late.close()


def test_only_faces_publishes_frames_with_faces(broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port)
    runner = runner_for(broker.port, 100, {}, only_faces=True)
    runner.start()
    for seq in range(20):
        runner.offer(record(seq))
    assert runner.stop(15)
    until(lambda: len(subscriber.faces()) >= 10, 10, "messages")
    time.sleep(0.3)
    subscriber.close()
    assert sorted(r["seq"] for r in subscriber.faces()) == list(range(0, 20, 2))


def test_a_broker_restart_loses_nothing_within_the_queue_and_counts_beyond_it(broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.port)
    counts: dict[str, int] = {}
    runner = runner_for(broker.port, 500, counts)
    runner.start()
    for seq in range(100):
        runner.offer(record(seq))
    until(lambda: counts.get("written", 0) == 100, 10, "the first records")
    broker.stop()
    for seq in range(100, 300):  # 200 while the broker is down: within the queue
        runner.offer(record(seq))
    time.sleep(1.0)
    broker.start()
    for seq in range(300, 350):
        runner.offer(record(seq))
    assert runner.stop(20)
    until(lambda: {r["seq"] for r in subscriber.faces()} >= set(range(350)), 20, "every record after the restart")
    assert counts == {"written": 350}, "nothing dropped"

    # Beyond the bound: 1,000 records while the broker is down, a queue of 100.
    counts = {}
    runner = runner_for(broker.port, 100, counts)
    runner.start()
    until(lambda: subscriber.last("streamd/available") == "online", 10, "online")
    broker.stop()
    for seq in range(1000, 2000):
        runner.offer(record(seq))
    broker.start()
    assert runner.stop(20)
    until(lambda: len({r["seq"] for r in subscriber.faces() if r["seq"] >= 1000}) >= counts["written"], 20, "x")
    subscriber.close()
    received = {r["seq"] for r in subscriber.faces() if r["seq"] >= 1000}
    assert len(received) == counts["written"] and counts["written"] + counts["queue_full"] == 1000
    assert 100 <= counts["written"] <= 100 + 256, "the queue, plus the group held when it failed"


@pytest.mark.assets
def test_a_daemon_publishes_each_analysed_frame_once_and_its_will_says_offline_when_killed(
    broker: Mosquitto, canonical_model: Path, test_video: Path, tmp_path: Path
) -> None:
    subscriber = Subscriber(broker.port)
    out = tmp_path / "out.jsonl"
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{free_port()}}}\n"
        f"engine: {{model: {canonical_model}, threads: 1}}\n"
        f"sinks: [{{path: {out}}}, {{type: mqtt, port: {broker.port}, keepalive_s: 5}}]\n"
        f"cameras: [{{id: door, url: '{test_video}', fps: 5}}]\n"
    )
    process = spawn_streamd(config)
    try:
        until(lambda: subscriber.last("streamd/door/state") == "streaming", 60, "the camera's state")
        assert subscriber.last("streamd/available") == "online"
        until(lambda: len(subscriber.faces()) >= 15, 60, "messages")
        stderr = stop_daemon(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    until(lambda: subscriber.last("streamd/available") == "offline", 10, "offline after SIGTERM")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    published = subscriber.faces()
    assert [r["seq"] for r in published] == [r["seq"] for r in lines], "one message per analysed frame"
    assert published[0].keys() == lines[0].keys()
    assert re.search(r"sink mqtt-1 stopped: (\d+) record\(s\) written, 0 dropped", stderr)

    # SIGKILL: no goodbye, so the broker's Last Will says it, after 1.5 x keepalive.
    process = spawn_streamd(config)
    try:
        until(lambda: subscriber.last("streamd/available") == "online", 60, "online again")
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        killed = time.monotonic()
        until(lambda: subscriber.last("streamd/available") == "offline", 15, "the Last Will")
        assert time.monotonic() - killed <= 5 * 1.5 + 2
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        subscriber.close()


def test_the_mqtt_password_is_masked_wherever_it_appears() -> None:
    from streamd.base.redact import redact_text

    MqttSinkConfig(type="mqtt", username="streamd", password="Br0ker-Pa55")
    assert "Br0ker-Pa55" not in redact_text("connect failed for streamd:Br0ker-Pa55 at broker")
