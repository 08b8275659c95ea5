"""Writing streams.yaml as operators and editors do, and reading the daemon back."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def until(condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"streamd exited while waiting for {what}"
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def write_atomically(path: Path, text: str) -> None:
    """As editors save: a new file renamed over the old one."""
    partial = path.with_name(path.name + ".swp")
    partial.write_text(text)
    os.replace(partial, path)


def config_text(port: int, cameras: dict[str, str], fps: str = "5") -> str:
    lines = [f"metrics: {{listen: 127.0.0.1:{port}}}", "defaults: {backoff: {initial_s: 0.2, max_s: 1}}", "cameras:"]
    lines += [f"  - {{id: {cid}, url: '{url}', fps: {fps}}}" for cid, url in cameras.items()]
    return "\n".join(lines) + "\n"


def cameras_in(status: str) -> dict[str, str]:
    return {c["id"]: c["state"] for c in json.loads(status)["cameras"]}


# Nine levels of nine aliases: 9**9 (387 million) strings once expanded.
ALIAS_BOMB = (
    "# 9**9 lol\n"
    + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))
)


def deep_nesting(levels: int) -> str:
    return "cameras: " + "[" * levels + "]" * levels + "\n"
