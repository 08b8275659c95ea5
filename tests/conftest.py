"""Shared fixtures: real test videos, a real RTSP server on loopback, the shared assets.

Tests that need GStreamer or the shared assets skip with the reason when those are
missing, except under CI (CI=true), where everything is installed and a skip would hide
a broken set-up: there they fail instead.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.testing.demo import ASSETS, CACHE_DIR
from devtools.testing.rtsp import RtspTestServer, gstreamer_missing
from devtools.testing.video import cached_video
from tests.support.environment import TEST_VIDEO, StartRtspServer, skip_or_fail


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not (ASSETS / "models").is_dir():
        skip_or_fail(f"shared assets not found at {ASSETS}")
    return ASSETS


@pytest.fixture(scope="session")
def raw_model(assets_dir: Path) -> Path:
    return assets_dir / "models" / "yolov5n-0.5.onnx"


@pytest.fixture(scope="session")
def canonical_model(raw_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from streamd.model.prepare import prepare_model

    return prepare_model(raw_model, tmp_path_factory.mktemp("models") / "canonical.onnx").path


@pytest.fixture(scope="session")
def test_video() -> Path:
    return cached_video(TEST_VIDEO, CACHE_DIR)


@pytest.fixture(scope="session")
def gstreamer() -> None:
    reason = gstreamer_missing()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def rtsp_servers(gstreamer: None) -> Iterator[StartRtspServer]:
    """Starts RTSP test servers (RtspTestServer's arguments) and stops each after the test,
    whatever happened in it: a server left running would fail a later test at its exit."""
    started: list[RtspTestServer] = []

    def start(
        mounts: dict[str, Path], port: int = 0, credentials: str | None = None, transports: str = "tcp,udp"
    ) -> RtspTestServer:
        server = RtspTestServer(mounts, port=port, credentials=credentials, transports=transports)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def rtsp_server(rtsp_servers: StartRtspServer, test_video: Path) -> RtspTestServer:
    """A server with mounts cam1..cam3, all serving the test video at 25 fps."""
    return rtsp_servers({f"cam{i}": test_video for i in (1, 2, 3)})


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system that fills up (mounting needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.setblocking(False)
    try:
        yield listener, path
    finally:
        listener.close()
