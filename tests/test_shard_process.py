"""Three `streamd run` processes on one streams.yaml, each with its own `--shard`."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from tests.support.daemon import spawn_streamd, stop_daemon
from tests.support.environment import StartRtspServer
from tests.support.listener import fetch, sample, scrape
from tests.support.streams import cameras_in, config_text, write_atomically

pytestmark = pytest.mark.rtsp

IDS = [f"cam{n:02d}" for n in range(30)]


class Instances:
    """N instances of one file, each with `--shard I/N` and its own metrics port."""

    def __init__(self, config: Path, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.processes = [
            spawn_streamd(config, "--shard", f"{index}/{count}", "--metrics-listen", f"127.0.0.1:{port}")
            for index, port in enumerate(self.ports)
        ]

    def status(self, index: int) -> dict[str, object]:
        status: dict[str, object] = json.loads(fetch(self.ports[index], "/status"))
        return status

    def cameras(self) -> list[dict[str, str]]:
        return [cameras_in(fetch(port, "/status")) for port in self.ports]

    def until(self, condition: object, timeout: float, what: str) -> None:
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                assert process.poll() is None, f"an instance exited while waiting for {what}: {process.stderr}"
            try:
                if condition():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}")

    def stop(self) -> None:
        """Stops every instance, even when one of them fails to stop cleanly."""
        with contextlib.ExitStack() as stopping:
            for process in self.processes:
                stopping.callback(stop_daemon, process)


def test_instances_on_one_file_each_run_their_own_cameras(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    server = rtsp_servers({"live": test_video})
    # The 30 cameras name mounts the server does not have: each instance runs them (they
    # show in its /status) without 30 decoders on a two-core machine.
    cameras = {camera_id: server.url(f"absent-{camera_id}") for camera_id in IDS}
    config = tmp_path / "streams.yaml"
    config.write_text(config_text(free_port(), cameras))
    three = Instances(config, 3)
    try:
        three.until(lambda: all(three.cameras()), 30, "three instances running")
        before = [set(ran) for ran in three.cameras()]
        assert sorted(camera for ran in before for camera in ran) == IDS, "each camera in exactly one instance"
        for index, port in enumerate(three.ports):
            assert three.status(index)["shard"] == f"{index}/3"
            info = [line for line in scrape(port).splitlines() if line.startswith("streamd_build_info{")]
            assert len(info) == 1 and f'shard="{index}/3"' in info[0]

        # An operator adds a camera to the file: it starts in exactly one instance.
        write_atomically(config, config_text(free_port(), {**cameras, "added": server.url("live")}))
        three.until(
            lambda: all(
                sample(scrape(port), "streamd_config_reloads_total", result="applied") == 1.0 for port in three.ports
            ),
            20,
            "every instance to reload",
        )
        three.until(lambda: any(ran.get("added") == "streaming" for ran in three.cameras()), 20, "the new camera")
        after = three.cameras()
        assert sum("added" in ran for ran in after) == 1
        assert [set(ran) - {"added"} for ran in after] == before, "no other camera moved"
    finally:
        three.stop()

    # Instance 2 goes: its cameras, and only those, move to the two that remain.
    two = Instances(config, 2)
    try:
        two.until(lambda: all(two.cameras()), 30, "two instances running")
        ran = [set(cameras) for cameras in two.cameras()]
        assert sorted(camera for cameras in ran for camera in cameras) == sorted([*IDS, "added"])
        gone = {camera for camera in before[2]} | ({"added"} if "added" in after[2] else set())
        for index in (0, 1):
            kept = before[index] | ({"added"} if "added" in after[index] else set())
            assert kept <= ran[index], "a camera of a remaining instance moved"
            assert ran[index] - kept <= gone
        assert gone, "instance 2 had cameras to hand over"
    finally:
        two.stop()
