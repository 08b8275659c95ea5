"""Start, stop and kill the RTSP test server (`rtsp_server.py`) from the project's Python.

The server needs Debian's GStreamer bindings, which only Debian's own interpreter has,
so it runs as a child process of `/usr/bin/python3`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SYSTEM_PYTHON = os.environ.get("STREAMD_GST_PYTHON", "/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def gstreamer_missing() -> str | None:
    """Why the test server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "assert all(Gst.ElementFactory.find(e) for e in ('matroskademux', 'h264parse', 'rtph264pay', 'appsrc'))"
    )
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"gst-rtsp-server is not usable from {SYSTEM_PYTHON}: {last} (make test installs it as root)"
    return None


class RtspTestServer:
    """A real RTSP server on loopback serving `mounts` (name -> .mkv file)."""

    def __init__(
        self,
        mounts: dict[str, Path],
        port: int = 0,
        host: str = "127.0.0.1",
        credentials: str | None = None,
        transports: str = "tcp,udp",
    ) -> None:
        """`transports`: what the server offers (`udp` alone refuses TCP with 461)."""
        self.mounts = mounts
        self.port = port
        self.host = host
        self.credentials = credentials
        self.transports = transports
        self._process: subprocess.Popen[str] | None = None
        self._auth_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def url(self, mount: str, userinfo: str | None = None) -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{auth}{self.host}:{self.port}/{mount}"

    def start(self, timeout: float = 60.0) -> None:
        if self._process is not None:
            raise RuntimeError("the RTSP test server is already running")
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--host", self.host, "--port", str(self.port)]
        command += ["--transports", self.transports]
        for name, path in self.mounts.items():
            command += ["--mount", f"{name}={path}"]
        if self.credentials:
            # Through a file, never argv: process arguments are visible to every user.
            self._auth_dir = tempfile.TemporaryDirectory(prefix="streamd-rtsp-")
            auth_file = Path(self._auth_dir.name) / "auth"
            auth_file.write_text(self.credentials, encoding="utf-8")
            auth_file.chmod(0o600)
            command += ["--auth-file", str(auth_file)]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self._read_ready_line(timeout)
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"RTSP test server did not start (said {line!r})")
        self.port = int(line.split()[1])
        log.info("RTSP test server on %s:%d serving %s", self.host, self.port, ", ".join(self.mounts))

    def _read_ready_line(self, timeout: float) -> str:
        assert self._process is not None and self._process.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        return result[0].strip() if result else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate politely, then kill."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def kill(self) -> None:
        """Die like a crashed camera server: no goodbye to the clients."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._process is not None and self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None
        if self._auth_dir is not None:
            self._auth_dir.cleanup()
            self._auth_dir = None

    def __enter__(self) -> RtspTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
