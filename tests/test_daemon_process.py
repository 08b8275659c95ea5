"""The daemon as operators run it: a real process, a real server, scraped over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from tests.support.daemon import spawn_streamd
from tests.support.environment import StartRtspServer
from tests.support.listener import sample, scrape

pytestmark = pytest.mark.rtsp

PASSWORD = "Camera-Pa55-42"


def wait_for_metrics(port: int, process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "streamd exited early"
        try:
            text = scrape(port)
            if all(f'streamd_camera_up{{camera="{c}"}} 1.0' in text for c in ("door", "yard")):
                return text
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("streamd did not start streaming both cameras")


def test_streamd_run_streams_scrapes_keeps_secrets_and_stops_cleanly(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"""
metrics:
  listen: 127.0.0.1:{port}
cameras:
  - id: door
    url: rtsp://viewer:${{DOOR_PASSWORD}}@127.0.0.1:{{rtsp_port}}/cam1
  - id: yard
    url: rtsp://viewer:${{DOOR_PASSWORD}}@127.0.0.1:{{rtsp_port}}/cam2
"""
    )
    server = rtsp_servers({"cam1": test_video, "cam2": test_video}, credentials=f"viewer:{PASSWORD}")
    config.write_text(config.read_text().replace("{rtsp_port}", str(server.port)))
    env = {**os.environ, "DOOR_PASSWORD": PASSWORD}
    process = spawn_streamd(config, "--rate-log-interval", "1", env=env)
    try:
        first = wait_for_metrics(port, process, 30)
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        time.sleep(3)
        second = scrape(port)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 0, stderr
    for camera in ("door", "yard"):
        assert (sample(second, "streamd_frames_sampled_total", camera=camera) or 0) > (
            sample(first, "streamd_frames_sampled_total", camera=camera) or 0
        )
    assert "[door] streaming" in stderr
    assert re.search(r"\[yard\] streaming: decoded [\d.]+ fps, sampled [\d.]+ fps", stderr), "no per-camera rate line"
    assert "rtsp://***@127.0.0.1" in stderr
    for text in (stdout, stderr, first, second, cmdline):
        assert PASSWORD not in text
    assert "streamd stopped" in stderr


def test_testserver_cli_stops_its_rtsp_server_on_sigterm(gstreamer: None, test_video: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.testserver", "--port", str(free_port()), "--mount", f"cam1={test_video}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("rtsp://127.0.0.1:")
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert len(children) == 1
        process.send_signal(signal.SIGTERM)
        # The server must obey its SIGTERM: RtspTestServer.stop() would SIGKILL it only
        # after 10 s, so a clean exit within 5 s shows it stopped by itself.
        assert process.wait(timeout=5) == 0
        assert not Path(f"/proc/{children[0]}").exists(), "the RTSP server outlived its CLI"
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # reap it and close its pipes


def test_streamd_run_with_an_unusable_model_says_why_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "raw.onnx").write_bytes(b"not a model")
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{free_port()}}}\nengine: {{model: raw.onnx}}\ncameras: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "streamd", "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert (
        "cannot start" in result.stderr and "raw.onnx" in result.stderr and "not a readable ONNX model" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.assets
def test_sigterm_exits_0_in_time_and_every_inferred_frame_has_its_record(
    rtsp_servers: StartRtspServer, test_video: Path, canonical_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "detections.jsonl"
    config = tmp_path / "streams.yaml"
    server = rtsp_servers({"cam1": test_video, "cam2": test_video})
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{port}}}\n"
        f"engine: {{model: {canonical_model}}}\n"
        f"sinks: [{{path: {out}}}]\n"
        "cameras:\n" + "".join(f"  - {{id: {name}, url: '{server.url(name)}', fps: 5}}\n" for name in ("cam1", "cam2"))
    )
    process = spawn_streamd(config)
    try:
        deadline = time.monotonic() + 60
        inferred_before = 0.0
        while inferred_before < 20 and time.monotonic() < deadline:
            assert process.poll() is None, "streamd exited early"
            time.sleep(0.3)
            try:
                text = scrape(port)
            except OSError:
                continue
            inferred_before = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("streamd_frames_inferred_total{")
            )
        assert inferred_before >= 20, "frames were not being analysed"
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 0, stderr
    assert took < 15, f"shutdown took {took:.1f}s"
    match = re.search(r"detector stopped: (\d+) frames inferred", stderr)
    assert match, stderr[-2000:]
    records = out.read_text().splitlines()
    assert len(records) == int(match.group(1)) >= inferred_before
    assert all(json.loads(line)["camera"] in ("cam1", "cam2") for line in records)


def test_a_second_stop_signal_exits_at_once(tmp_path: Path) -> None:
    from tests.support.ingest import silent_tcp_listener

    port = free_port()
    config = tmp_path / "streams.yaml"
    with silent_tcp_listener() as silent:
        # Connecting to a host that never answers: the first SIGTERM waits for that
        # camera's open timeout (20 s) before it can finish.
        config.write_text(
            f"metrics: {{listen: 127.0.0.1:{port}}}\n"
            f"cameras: [{{id: mute, url: 'rtsp://127.0.0.1:{silent}/x', open_timeout_s: 20}}]\n"
        )
        process = spawn_streamd(config)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if 'streamd_camera_state{camera="mute",state="starting"} 1.0' in scrape(port):
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert process.poll() is None, "the first signal shuts down in order, which takes a while here"
            process.send_signal(signal.SIGTERM)
            start = time.monotonic()
            _, stderr = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 1
    assert time.monotonic() - start < 3
    assert "second stop signal" in stderr
