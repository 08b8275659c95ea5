"""Signals at awkward moments, against a real `streamd run` process.

Each test starts the daemon the way systemd does (a NOTIFY_SOCKET to report to), sends
the signal at the moment in question, and checks what systemd and the operator would
see: the exit status, the time it took, the notify messages, the records written.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from tests.support.daemon import DaemonProcess, drain
from tests.support.environment import StartRtspServer
from tests.support.ingest import silent_tcp_listener


def engine_config(tmp_path: Path, model: Path, engine: str, cameras: str = "cameras: []\n") -> Path:
    config = tmp_path / "streams.yaml"
    config.write_text(
        f"metrics: {{listen: 127.0.0.1:{free_port()}}}\n"
        f"engine: {{model: {model}, {engine}}}\n"
        f"sinks: [{{path: {tmp_path / 'out.jsonl'}}}]\n" + cameras
    )
    return config


def readies(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [m for m in messages if m.get("READY") == "1"]


@pytest.mark.assets
def test_sigterm_during_model_load_exits_0_at_once_and_never_sends_ready(
    canonical_model: Path, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listener, address = notify_socket
    # Sixteen instances load one after the other (about 40 ms each here): the signal
    # is sent as soon as the daemon says it is loading them.
    config = engine_config(tmp_path, canonical_model, "instances: 16, threads: 1")
    daemon = DaemonProcess(config, address)
    at_signal = daemon.wait_for_log(r"16 engine instance\(s\)", 60)
    sent = daemon.signal(signal.SIGTERM)
    status = daemon.wait(10)
    took = time.monotonic() - sent
    log = daemon.log
    assert status == 0, log[-3000:]
    assert took < 5, f"took {took:.1f}s"
    assert len(re.findall("onnxruntime engine:", at_signal)) < 16, "the signal came after the load; try again"
    assert "start abandoned" in log and "engine warm" not in log
    messages = drain(listener)
    assert readies(messages) == [], messages
    assert {"STOPPING": "1", "STATUS": "stopping"} in messages


@pytest.mark.assets
def test_sigterm_during_warm_up_exits_0_at_once_and_never_sends_ready(
    canonical_model: Path, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listener, address = notify_socket
    # Two instances warming up batches of 64 on one thread each: about 10 s here.
    config = engine_config(tmp_path, canonical_model, "instances: 2, threads: 1, profile: {max: 64}")
    config.write_text(config.read_text() + "batcher: {max_batch: 64}\n")
    daemon = DaemonProcess(config, address)
    daemon.wait_for_log("onnxruntime engine:", 60, count=2)
    time.sleep(0.5)
    sent = daemon.signal(signal.SIGTERM)
    status = daemon.wait(10)
    took = time.monotonic() - sent
    log = daemon.log
    assert status == 0, log[-3000:]
    assert took < 5, f"took {took:.1f}s"
    assert "start abandoned" in log and "engine warm" not in log
    assert readies(drain(listener)) == []


def file_camera_config(tmp_path: Path, video: Path, port: int) -> Path:
    config = tmp_path / "streams.yaml"
    config.write_text(f"metrics: {{listen: 127.0.0.1:{port}}}\ncameras: [{{id: loop, url: '{video}', fps: 5}}]\n")
    return config


def test_sighup_at_start_is_harmless_and_rereads_the_file_once_running(
    test_video: Path, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listener, address = notify_socket
    config = file_camera_config(tmp_path, test_video, free_port())
    daemon = DaemonProcess(config, address)
    time.sleep(0.15)  # still importing: before the loop can take signals
    daemon.signal(signal.SIGHUP)
    time.sleep(0.3)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_log(r"\[loop\] streaming", 30)
    daemon.wait_for_log(r"reload \(SIGHUP\)|streamd running", 10)
    sent = daemon.signal(signal.SIGTERM)
    status = daemon.wait(20)
    assert status == 0, daemon.log[-3000:]
    assert time.monotonic() - sent < 10
    assert len(readies(drain(listener))) == 1


def test_sighup_during_shutdown_starts_nothing_and_a_stuck_camera_is_left_behind_in_time(
    test_video: Path, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listener, address = notify_socket
    with silent_tcp_listener() as silent:
        config = tmp_path / "streams.yaml"
        config.write_text(
            f"metrics: {{listen: 127.0.0.1:{free_port()}}}\n"
            "cameras:\n"
            f"  - {{id: loop, url: '{test_video}', fps: 5}}\n"
            f"  - {{id: mute, url: 'rtsp://127.0.0.1:{silent}/x', open_timeout_s: 60}}\n"
        )
        daemon = DaemonProcess(config, address)
        daemon.wait_for_log(r"\[loop\] streaming", 30)
        sent = daemon.signal(signal.SIGTERM)
        daemon.wait_for_log("shutting down", 5)
        daemon.signal(signal.SIGHUP)
        status = daemon.wait(30)
        took = time.monotonic() - sent
    log = daemon.log
    assert status == 0, log[-3000:]
    # The cameras' share of the 30 s deadline is 6 s; the stuck one is left behind then.
    assert took < 10, f"took {took:.1f}s"
    assert "[mute] decode thread did not stop" in log
    after = log[log.index("shutting down") :]
    assert "SIGHUP ignored: stopping" in after
    assert "starting" not in after.replace("stopping", ""), "a reload during shutdown started a camera"
    assert readies(drain(listener)) != []


def test_a_signal_after_a_clean_stop_keeps_exit_0(tmp_path: Path) -> None:
    # The moment between the daemon's last step and the process's exit, made long: a
    # late SIGTERM (systemd signalling the whole control group) must not kill it.
    script = (
        "import asyncio, os, signal, time\n"
        "from streamd.config.schema import StreamsConfig\n"
        "from streamd.config.loader import LoadedConfig\n"
        "from streamd.service.daemon import Daemon, DaemonOptions\n"
        "daemon = Daemon(LoadedConfig(StreamsConfig(cameras=[])), DaemonOptions(metrics_port=0))\n"
        "async def main():\n"
        "    asyncio.get_running_loop().call_later(0.5, daemon.request_stop)\n"
        "    return await daemon.run()\n"
        "code = asyncio.run(main())\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.assets
def test_a_camera_stuck_connecting_does_not_hold_the_drain_and_every_inferred_frame_is_written(
    rtsp_servers: StartRtspServer,
    test_video: Path,
    canonical_model: Path,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
) -> None:
    listener, address = notify_socket
    server = rtsp_servers({"cam1": test_video})
    with silent_tcp_listener() as silent:
        cameras = (
            "cameras:\n"
            f"  - {{id: cam1, url: '{server.url('cam1')}', fps: 5}}\n"
            f"  - {{id: mute, url: 'rtsp://127.0.0.1:{silent}/x', open_timeout_s: 60}}\n"
        )
        config = engine_config(tmp_path, canonical_model, "threads: 1", cameras)
        daemon = DaemonProcess(config, address)
        daemon.wait_for_log(r"\[cam1\] streaming", 60)
        wait_for_records(tmp_path / "out.jsonl", 10, daemon.process.poll)
        sent = daemon.signal(signal.SIGTERM)
        status = daemon.wait(40)
        took = time.monotonic() - sent
    log = daemon.log
    assert status == 0, log[-3000:]
    assert took < 12, f"took {took:.1f}s"
    match = re.search(r"detector stopped: (\d+) frames inferred, every one handed to the sinks", log)
    assert match, log[-3000:]
    records = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(records) == int(match.group(1))
    assert {json.loads(line)["camera"] for line in records} == {"cam1"}
    messages = drain(listener)
    assert len(readies(messages)) == 1 and messages[-1] == {"STOPPING": "1", "STATUS": "stopping"}


def wait_for_records(path: Path, count: int, exited: Callable[[], int | None]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert exited() is None, "streamd exited early"
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    pytest.fail(f"fewer than {count} records in {path} after 60s")
