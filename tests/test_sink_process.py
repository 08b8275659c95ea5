"""A real daemon's sink when its directory is deleted and when its disk fills up."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import system_binary
from tests.support.listener import sample, scrape
from tests.support.redis import RedisServer
from tests.support.streams import until

pytestmark = pytest.mark.assets


def config_for(tmp_path: Path, model: Path, video: Path, out: Path, port: int) -> Path:
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {model}, threads: 1}}\n"
        f"sinks: [{{path: {out}}}]\n"
        f"cameras: [{{id: loop, url: '{video}', fps: 5}}]\n"
    )
    return config


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_deleted_output_directory_is_recreated_and_writing_goes_on(
    canonical_model: Path, test_video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "detections.jsonl"
    port = free_port()
    process = spawn_streamd(config_for(tmp_path, canonical_model, test_video, out, port))
    try:
        until(lambda: count_lines(out) >= 5, 60, "the first records", process)
        shutil.rmtree(out.parent)
        until(lambda: count_lines(out) >= 5, 30, "records in a recreated directory", process)
    finally:
        stderr = stop_daemon(process)
    assert "was removed or replaced; writing to a new file there" in stderr
    assert "write_error" not in stderr.replace("0 write_error", "")
    assert all(json.loads(line)["camera"] == "loop" for line in out.read_text().splitlines())


def test_a_full_disk_leaves_whole_lines_exact_counts_and_an_unready_daemon(
    canonical_model: Path, test_video: Path, tmp_path: Path, small_tmpfs: Path
) -> None:
    out = small_tmpfs / "detections.jsonl"
    (small_tmpfs / "filler").write_bytes(bytes(56 * 1024))  # about 40 records' room left
    port = free_port()
    process = spawn_streamd(config_for(tmp_path, canonical_model, test_video, out, port))
    try:
        until(lambda: sample(scrape(port), "streamd_sink_up", sink="jsonl") == 0.0, 120, "a full disk", process)
        code, why = readyz(port)
        time.sleep(1.0)  # a few more failed writes
    finally:
        stderr = stop_daemon(process)
    assert code == 503 and "sink jsonl failing" in why and "No space left" in why
    assert len(re.findall("writing failed", stderr)) == 1, "one failure episode, logged once"
    inferred = re.search(r"detector stopped: (\d+) frames inferred, every one handed to the sinks", stderr)
    counts = re.search(r"sink jsonl stopped: (\d+) record\(s\) written, (\d+) dropped \(0 queue_full", stderr)
    assert inferred and counts, stderr[-3000:]
    text = out.read_text()
    assert text.endswith("\n"), "no torn last line"
    lines = [json.loads(line) for line in text.splitlines()]
    written, dropped = int(counts.group(1)), int(counts.group(2))
    assert len(lines) == written and dropped > 0
    assert written + dropped == int(inferred.group(1)), "every inferred frame is written or counted as dropped"


def test_a_hung_broker_at_stop_is_counted_not_a_failed_stop(
    canonical_model: Path, test_video: Path, tmp_path: Path
) -> None:
    """Redis stopped dead (SIGSTOP: it holds the connection and never answers) behind a
    client timeout longer than the whole stop, and the MQTT broker gone: SIGTERM still
    exits 0 within the stop deadline, and every sink's final line accounts for every
    frame inferred."""
    redis = RedisServer(system_binary("redis-server", "redis-server"), tmp_path)
    redis.start()
    out = tmp_path / "out.jsonl"
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {canonical_model}, threads: 1}}\n"
        f"sinks:\n  - {{path: {out}}}\n  - {{type: redis, url: '{redis.url}', timeout_s: 60}}\n"
        f"  - {{type: mqtt, port: {free_port()}, timeout_s: 5}}\n"
        f"cameras: [{{id: loop, url: '{test_video}', fps: 5}}]\n"
    )
    process = spawn_streamd(config)
    try:
        until(lambda: count_lines(out) >= 10 and redis.client().xlen("streamd:loop") >= 10, 60, "records", process)
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
        time.sleep(3)  # records pile up behind a write that will not return
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=45)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if redis.process is not None:
            redis.process.send_signal(signal.SIGCONT)
        redis.stop()
    assert process.returncode == 0, stderr[-3000:]
    assert took < 30, f"the stop took {took:.1f}s, past shutdown_timeout_s"
    inferred = int(re.findall(r"detector stopped: (\d+) frames inferred", stderr)[-1])
    finals = re.findall(r"sink (\S+) stopped: (\d+) record\(s\) written, (\d+) dropped", stderr)
    assert len(finals) == 3, stderr[-3000:]
    for name, written, dropped in finals:
        assert int(written) + int(dropped) == inferred, (name, written, dropped, inferred)
    assert inferred > 10 and count_lines(out) == inferred
    assert "did not return within" in stderr, "the Redis write was abandoned at the deadline"
