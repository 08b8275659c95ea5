"""systemd integration: the notify protocol over a real datagram socket, and the unit file."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from streamd.analysis.detector import Detector
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.metrics.registry import Metrics
from streamd.monitor.systemd import Notifier
from streamd.service.daemon import Daemon, DaemonOptions
from streamd.sinks.outputs import Outputs
from tests.support.daemon import drain
from tests.support.engines import HostBufferEngine
from tests.support.environment import system_binary
from tests.support.waiting import run, wait_for

ROOT = Path(__file__).resolve().parents[1]
Messages = list[dict[str, str]]


def test_notifier_speaks_the_protocol_and_is_silent_without_systemd(notify_socket: tuple[socket.socket, str]) -> None:
    listener, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert notifier.enabled and notifier.watchdog_interval_s == 5.0
    notifier.ready("3/3 cameras streaming")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()
    assert drain(listener) == [
        {"READY": "1", "STATUS": "3/3 cameras streaming"},
        {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]
    quiet = Notifier({})
    assert not quiet.enabled and quiet.watchdog_interval_s is None
    quiet.ready("x")  # no socket, no error


class StuckableEngine(HostBufferEngine):
    """The edge: an engine whose next call can be made to hang, like a wedged GPU."""

    name = "stuckable"
    max_batch = 2

    def __init__(self) -> None:
        self.stuck = threading.Event()
        self.released = threading.Event()

    def infer(self, images: np.ndarray) -> np.ndarray:
        if self.stuck.is_set():
            self.released.wait(30)
        return np.zeros((len(images), 1, 15), np.float32)

    def close(self) -> None:
        self.released.set()


def test_ready_watchdog_only_while_healthy_and_stopping(
    notify_socket: tuple[socket.socket, str], test_video: Path, tmp_path: Path
) -> None:
    listener, path = notify_socket
    # WatchdogSec=0.4s: a ping every 0.2 s while healthy.
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    config = StreamsConfig.model_validate(
        {
            "health": {"engine_stuck_s": 0.5},
            "cameras": [{"id": "cam", "url": str(test_video), "fps": 10}],
        }
    )
    engine = StuckableEngine()

    async def scenario() -> tuple[
        list[dict[str, str]], list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]
    ]:
        metrics = Metrics()
        detector = Detector([engine], config.batcher, config.postprocess, Outputs([]), metrics)
        daemon = Daemon(
            LoadedConfig(config),
            DaemonOptions(consumer=detector, metrics_port=0, notifier=notifier, rate_log_interval_s=3600),
        )
        await daemon.start()
        started = drain(listener)
        await asyncio.sleep(1.2)
        healthy = drain(listener)
        engine.stuck.set()
        await wait_for(lambda: detector.engine_stuck_s() > 0.6, 10, "the engine to be stuck")
        drain(listener)
        await asyncio.sleep(1.2)
        while_stuck = drain(listener)
        engine.stuck.clear()
        engine.released.set()
        await asyncio.sleep(1.0)
        recovered = drain(listener)
        await daemon.stop()
        return started, healthy, while_stuck, recovered + drain(listener)

    started, healthy, while_stuck, after = run(scenario())
    assert started and started[0]["READY"] == "1" and "cameras streaming" in started[0]["STATUS"]
    assert sum("WATCHDOG" in m for m in healthy) >= 3
    assert not any("WATCHDOG" in m for m in while_stuck), "a stuck engine must stop the pings"
    assert any("STATUS" in m for m in while_stuck), "STATUS goes on"
    assert any("WATCHDOG" in m for m in after), "pings resume once the engine moves again"
    assert after[-1] == {"STOPPING": "1", "STATUS": "stopping"}


def test_cameras_down_do_not_stop_the_watchdog(notify_socket: tuple[socket.socket, str]) -> None:
    listener, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    config = StreamsConfig.model_validate({"cameras": [{"id": "down", "url": "rtsp://127.0.0.1:9/none"}]})

    async def scenario() -> list[dict[str, str]]:
        daemon = Daemon(
            LoadedConfig(config), DaemonOptions(metrics_port=0, notifier=notifier, rate_log_interval_s=3600)
        )
        await daemon.start()
        await asyncio.sleep(1.2)
        messages = drain(listener)
        await daemon.stop()
        return messages

    messages = run(scenario())
    assert sum("WATCHDOG" in m for m in messages) >= 3
    assert any(m.get("STATUS", "").startswith("0/1 cameras streaming") for m in messages)


def unit_with_real_exec(tmp_path: Path, text: str) -> Path:
    unit = tmp_path / "streamd.service"
    unit.write_text(text.replace("/opt/streamd/.venv/bin/streamd", shutil.which("true") or "/bin/true"))
    return unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "streamd.service").read_text()
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=streamd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "LoadCredential=",
        "LimitNOFILE=65536",
        "Environment=CUPY_CACHE_DIR=/var/lib/streamd/cupy",
    ):
        assert needed in text, needed
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_with_real_exec(tmp_path, text))], capture_output=True, text=True
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
    # The check can fail: a bad value is reported.
    broken = unit_with_real_exec(tmp_path, text.replace("WatchdogSec=60s", "WatchdogSec=banana"))
    complaint = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert "banana" in complaint.stdout + complaint.stderr


def test_the_template_unit_runs_one_shard_per_gpu(tmp_path: Path) -> None:
    analyze = system_binary("systemd-analyze", "systemd")
    text = (ROOT / "deploy" / "streamd@.service").read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    for needed in ("--shard %i/${STREAMD_SHARDS}", "--metrics-listen 127.0.0.1:911%i"):
        assert needed in exec_start, needed
    for needed in (
        "Environment=CUDA_VISIBLE_DEVICES=%i",
        "StateDirectory=streamd/%i",
        "WorkingDirectory=/var/lib/streamd/%i",
        "LimitNOFILE=65536",
        "Environment=CUPY_CACHE_DIR=/var/lib/streamd/%i/cupy",
    ):
        assert needed in text, needed
    template = tmp_path / "streamd@.service"
    template.write_text(text.replace("/opt/streamd/.venv/bin/streamd", shutil.which("true") or "/bin/true"))
    result = subprocess.run([analyze, "verify", str(tmp_path / "streamd@1.service")], capture_output=True, text=True)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stderr
    template.write_text(template.read_text().replace("StateDirectory=streamd/%i", "StateDirectory=/streamd/%i"))
    complaint = subprocess.run([analyze, "verify", str(tmp_path / "streamd@1.service")], capture_output=True, text=True)
    assert "StateDirectory" in complaint.stdout + complaint.stderr
