"""Shared fixtures: real test videos, a real RTSP server on loopback, the shared assets.

Tests that need GStreamer or the shared assets skip with the reason when those are
missing, except under CI (CI=true), where everything is installed and a skip would hide
a broken set-up: there they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from devtools.testing.demo import ASSETS, CACHE_DIR
from devtools.testing.ports import free_port as free_port  # the tests import it from here
from devtools.testing.rtsp import RtspTestServer, gstreamer_missing
from devtools.testing.video import VideoSpec, cached_video

T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Small and short: these tests check behaviour, not decode speed.
TEST_VIDEO = VideoSpec(width=640, height=360, fps=25, seconds=6, bitrate_kbps=800)


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the set-up must provide this)")
    pytest.skip(reason)


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


StartRtspServer = Callable[..., RtspTestServer]


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


class HostBufferEngine:
    """Stand-in engines' share of the engine contract: input buffers in host memory."""

    input_height = input_width = 640
    max_batch = 1
    on_gpu = False

    def new_input_buffer(self) -> np.ndarray:
        return np.empty((self.max_batch, self.input_height, self.input_width, 3), np.uint8)

    def load(self, buffer: np.ndarray, index: int, image: np.ndarray) -> None:
        buffer[index] = image


def gpu_missing(*modules: str) -> str | None:
    """Why the GPU tests cannot run here (CuPy, a device, and `modules`), or None."""
    try:
        import importlib

        import cupy

        for module in modules:
            importlib.import_module(module)
        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - ImportError, CUDA runtime errors alike
        return f"needs CuPy{''.join(', ' + m for m in modules)} and an NVIDIA GPU: {error}"
    return None


def spawn_streamd(config: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`streamd run` as operators run it: a real process, text logs on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamd", "--log-format", "text", "run", "-c", str(config), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; returns the seconds it took, fails the test after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


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


def system_binary(name: str, package: str) -> str:
    """The path of a program a test needs from Debian, or a skip (a failure under CI) naming the package."""
    import shutil

    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)
    if path is None:
        skip_or_fail(f"{name} not installed (Debian package `{package}`; `make test` installs it as root)")
    assert path is not None
    return path


def stop_daemon(process: subprocess.Popen[str], timeout: float = 40) -> str:
    """SIGTERM a `streamd run` (killed if it does not exit in time); asserts exit 0, returns its stderr."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr[-3000:]
    return stderr
