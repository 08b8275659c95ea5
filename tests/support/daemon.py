"""Running the daemon as operators do: a real process, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def spawn_streamd(config: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`streamd run` as operators run it: a real process, text logs on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamd", "--log-format", "text", "run", "-c", str(config), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


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


class DaemonProcess:
    """`streamd run` with its log in a file (read while it runs), optionally a notify socket
    and a limit on its file descriptors (soft and hard, as systemd's LimitNOFILE=)."""

    def __init__(self, config: Path, notify: str | None = None, nofile: int | None = None) -> None:
        self.log_path = config.with_suffix(".log")
        env = {**os.environ, "NOTIFY_SOCKET": notify} if notify else None

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamd", "--log-format", "text", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
                preexec_fn=limit,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log
            if len(re.findall(pattern, text)) >= count:
                return text
            assert self.process.poll() is None, f"streamd exited before {pattern!r}:\n{text[-3000:]}"
            time.sleep(0.01)
        pytest.fail(f"no {pattern!r} in the log within {timeout:.0f}s:\n{self.log[-3000:]}")

    def signal(self, signum: int) -> float:
        self.process.send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


def drain(listener: socket.socket) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    while True:
        try:
            data = listener.recv(4096)
        except BlockingIOError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
