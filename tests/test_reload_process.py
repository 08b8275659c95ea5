"""Hot reload of streams.yaml in a running daemon process, against the real RTSP server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devtools.testing.ports import free_port
from streamd.base.memory import rss_bytes
from tests.support.daemon import spawn_streamd
from tests.support.environment import StartRtspServer
from tests.support.listener import fetch, sample, scrape
from tests.support.streams import cameras_in, config_text, until, write_atomically

pytestmark = pytest.mark.rtsp


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM the daemon (killed if it does not exit); its stderr."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return stderr


def test_reload_adds_removes_keeps_untouched_and_rejects_a_broken_edit(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    server = rtsp_servers({f"cam{i}": test_video for i in (1, 2, 3)})
    port = free_port()
    config = tmp_path / "streams.yaml"
    keep, drop, add = server.url("cam1"), server.url("cam2"), server.url("cam3")
    config.write_text(config_text(port, {"keep": keep, "drop": drop}))
    process = spawn_streamd(config)
    try:
        until(
            lambda: cameras_in(fetch(port, "/status")) == {"keep": "streaming", "drop": "streaming"},
            30,
            "both",
            process,
        )
        before = scrape(port)

        # Add one, remove one, leave one untouched; saved the way editors save.
        write_atomically(config, config_text(port, {"keep": keep, "add": add}))
        until(
            lambda: cameras_in(fetch(port, "/status")) == {"keep": "streaming", "add": "streaming"},
            20,
            "reload",
            process,
        )
        time.sleep(1.0)
        after = scrape(port)
        assert sample(after, "streamd_reconnects_total", camera="keep") == 0.0
        assert (sample(after, "streamd_frames_sampled_total", camera="keep") or 0) > (
            sample(before, "streamd_frames_sampled_total", camera="keep") or 0
        ), "the untouched camera's frames kept coming through the reload"
        assert sample(after, "streamd_frames_sampled_total", camera="drop") is None, "a removed camera's series go"
        assert sample(after, "streamd_config_reloads_total", result="applied") == 1.0
        sha_lines = [line for line in after.splitlines() if line.startswith("streamd_config_info{")]
        assert len(sha_lines) == 1 and str(config) in sha_lines[0]

        # A broken edit is rejected, and the running set stays.
        write_atomically(config, config_text(port, {"keep": keep, "add": add}, fps="-1"))
        until(
            lambda: sample(scrape(port), "streamd_config_reloads_total", result="rejected") == 1.0,
            20,
            "the rejection",
            process,
        )
        # Half-written YAML (a save caught mid-write): rejected too.
        config.write_text(config_text(port, {"keep": keep, "add": add})[:-20])
        time.sleep(1.5)
        status = fetch(port, "/status")
        assert cameras_in(status) == {"keep": "streaming", "add": "streaming"}
        assert sample(scrape(port), "streamd_reconnects_total", camera="keep") == 0.0

        # SIGHUP after the file is whole again: applied (fps change restarts that camera only).
        config.write_text(config_text(port, {"keep": keep, "add": add}).replace("cam3', fps: 5", "cam3', fps: 2"))
        process.send_signal(signal.SIGHUP)
        until(
            lambda: any(c["fps_target"] == 2 for c in json.loads(fetch(port, "/status"))["cameras"]),
            20,
            "SIGHUP",
            process,
        )
        assert sample(scrape(port), "streamd_reconnects_total", camera="keep") == 0.0
    finally:
        stderr = stop(process)
    assert process.returncode == 0
    assert f"{config}:" in stderr and "cameras[1].fps: must be > 0.0 (got -1)" in stderr
    assert "rejected; the running configuration stays" in stderr


def block_config_text(port: int, cameras: dict[str, str]) -> str:
    """Block style: cut anywhere after the first camera, it is still a valid file."""
    lines = [f"metrics: {{listen: 127.0.0.1:{port}}}", "defaults: {backoff: {initial_s: 0.2, max_s: 1}}", "cameras:"]
    for camera_id, url in cameras.items():
        lines += [f"  - id: {camera_id}", f"    url: {url}"]
    return "\n".join(lines) + "\n"


def vm_rss_mb(pid: int) -> float:
    resident = rss_bytes(pid)
    assert resident is not None, f"no /proc/{pid}/statm"
    return resident / 2**20


def reloads(port: int, result: str) -> float:
    return sample(scrape(port), "streamd_config_reloads_total", result=result) or 0.0


def test_empty_camera_less_and_half_written_saves_are_never_applied(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    server = rtsp_servers({"cam1": test_video, "cam2": test_video})
    port = free_port()
    config = tmp_path / "streams.yaml"
    keep = {"keep": server.url("cam1")}
    config.write_text(block_config_text(port, keep))
    process = spawn_streamd(config)
    try:
        until(lambda: cameras_in(fetch(port, "/status")) == {"keep": "streaming"}, 30, "streaming", process)

        config.write_text("")  # a zero-byte save
        until(lambda: reloads(port, "rejected") == 1, 20, "the empty file's rejection", process)
        config.write_text(f"metrics: {{listen: 127.0.0.1:{port}}}\n")  # a save without `cameras`
        until(lambda: reloads(port, "rejected") == 2, 20, "the camera-less file's rejection", process)
        assert cameras_in(fetch(port, "/status")) == {"keep": "streaming"}

        # A slow writer: half the file (which would itself validate, with a URL cut
        # short), a pause, then the rest.
        final = block_config_text(port, {**keep, "add": server.url("cam2")})
        half = final[: final.index("/cam2") + 3]
        with config.open("w") as file:
            file.write(half)
            file.flush()
            time.sleep(0.5)
            file.write(final[len(half) :])
        until(
            lambda: cameras_in(fetch(port, "/status")) == {"keep": "streaming", "add": "streaming"},
            20,
            "the final file",
            process,
        )
        time.sleep(1.5)  # any reload of the half file would have happened by now
        metrics = scrape(port)
        assert sample(metrics, "streamd_config_reloads_total", result="applied") == 1.0, "only the whole file"
        assert sample(metrics, "streamd_config_reloads_total", result="rejected") == 2.0
        assert sample(metrics, "streamd_reconnects_total", camera="keep") == 0.0
        assert sample(metrics, "streamd_reconnects_total", camera="add") == 0.0, "never started with a cut URL"
    finally:
        stderr = stop(process)
    assert process.returncode == 0
    assert "the file is empty (an interrupted save?)" in stderr
    assert "cameras: is required" in stderr


def test_yaml_bombs_saved_under_a_running_daemon_are_rejected_and_the_next_edit_applies(
    rtsp_servers: StartRtspServer, test_video: Path, tmp_path: Path
) -> None:
    from tests.support.streams import ALIAS_BOMB, deep_nesting

    server = rtsp_servers({"cam1": test_video})
    port = free_port()
    config = tmp_path / "streams.yaml"
    config.write_text(config_text(port, {"keep": server.url("cam1")}))
    process = spawn_streamd(config)
    try:
        until(lambda: cameras_in(fetch(port, "/status")) == {"keep": "streaming"}, 30, "streaming", process)
        rss_before = vm_rss_mb(process.pid)
        for number, bomb in enumerate((ALIAS_BOMB, deep_nesting(10_000)), start=1):
            write_atomically(config, bomb)
            until(lambda n=number: reloads(port, "rejected") == n, 20, f"rejection {number}", process)  # type: ignore[misc]
        growth = vm_rss_mb(process.pid) - rss_before
        assert growth < 50, f"the daemon grew {growth:.0f} MB reading the bombs"

        write_atomically(config, config_text(port, {"keep": server.url("cam1")}, fps="2"))
        until(
            lambda: [c["fps_target"] for c in json.loads(fetch(port, "/status"))["cameras"]] == [2],
            20,
            "the next valid edit",
            process,
        )
    finally:
        stderr = stop(process)
    assert process.returncode == 0
    assert "Traceback" not in stderr
    assert "aliases (*a) are not allowed" in stderr and "nested more than 32 levels deep" in stderr
