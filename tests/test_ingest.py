"""Camera ingest against the real RTSP test server on loopback, daemon in-process."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import av
import pytest

from devtools.testing.ports import free_port
from devtools.testing.rtsp import RtspTestServer
from streamd.service.daemon import Daemon
from tests.support.environment import StartRtspServer
from tests.support.ingest import FAST_BACKOFF, make_config, running, silent_tcp_listener, sources
from tests.support.listener import sample, scrape
from tests.support.waiting import run, wait_for

pytestmark = pytest.mark.rtsp


async def sampled_rates(daemon: Daemon, ids: list[str], seconds: float) -> dict[str, float]:
    cams = sources(daemon)
    before = {i: cams[i].metrics.sampled for i in ids}
    start = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    return {i: (cams[i].metrics.sampled - before[i]) / elapsed for i in ids}


def all_streaming(daemon: Daemon, ids: list[str]) -> bool:
    cams = sources(daemon)
    return all(cams[i].state == "streaming" for i in ids)


def test_three_cameras_at_25fps_are_sampled_at_5fps_within_10_percent(rtsp_server: RtspTestServer) -> None:
    ids = ["cam1", "cam2", "cam3"]

    async def scenario() -> None:
        config = make_config([{"id": i, "url": rtsp_server.url(i)} for i in ids], fps=5)
        async with running(config) as daemon:
            await wait_for(lambda: all_streaming(daemon, ids), 20, "all cameras streaming")
            await asyncio.sleep(1.0)  # past the burst of frames buffered while opening
            first = scrape(daemon.http.port)
            rates = await sampled_rates(daemon, ids, 10.0)
            second = scrape(daemon.http.port)
            for camera_id, rate in rates.items():
                assert rate == pytest.approx(5.0, rel=0.10), f"{camera_id} sampled at {rate:.2f} fps"
                decoded = sources(daemon)[camera_id].metrics.decoded
                assert decoded > 5 * sources(daemon)[camera_id].metrics.sampled * 0.8, "must decode every frame"
                # The contract as Prometheus sees it: the counter rises between scrapes.
                a = sample(first, "streamd_frames_sampled_total", camera=camera_id)
                b = sample(second, "streamd_frames_sampled_total", camera=camera_id)
                assert a is not None and b is not None and b - a >= 40
                assert sample(second, "streamd_camera_up", camera=camera_id) == 1.0
                assert sample(second, "streamd_camera_state", camera=camera_id, state="streaming") == 1.0
                age = sample(second, "streamd_last_frame_age_seconds", camera=camera_id)
                assert age is not None and age < 1.0
                lag = sample(second, "streamd_decode_lag_seconds", camera=camera_id)
                assert lag is not None and 0.0 <= lag < 1.0, "capture to decode, by the sender's RTCP clock"
            assert "process_cpu_seconds_total" in second

    run(scenario())


def test_killed_server_coming_back_brings_every_camera_back_within_the_backoff_bound(
    rtsp_servers: StartRtspServer, test_video: Path
) -> None:
    ids = ["cam1", "cam2", "cam3"]
    port = free_port()
    server = rtsp_servers(dict.fromkeys(ids, test_video), port=port)

    async def scenario() -> None:
        config = make_config([{"id": i, "url": server.url(i)} for i in ids], stall_timeout_s=3)
        async with running(config) as daemon:
            await wait_for(lambda: all_streaming(daemon, ids), 20, "all cameras streaming")
            server.kill()
            await wait_for(
                lambda: not any(s.state == "streaming" for s in sources(daemon).values()),
                10,
                "cameras to notice the dead server",
            )
            await asyncio.sleep(2.0)  # a few failed reconnects against the closed port
            assert {s.reason for s in sources(daemon).values()} <= {"connection_refused", "end_of_stream", "stalled"}
            server.start()
            # Worst case: a full backoff delay (max_s) plus connecting and the first frame.
            bound = FAST_BACKOFF["max_s"] + 5.0
            took = await wait_for(lambda: all_streaming(daemon, ids), bound, "all cameras back")
            logging.getLogger(__name__).info("cameras back %.1fs after restart", took)
            assert all(s.metrics.reconnects >= 1 for s in sources(daemon).values())
            await asyncio.sleep(1.0)  # past the burst of frames buffered while opening
            rates = await sampled_rates(daemon, ids, 4.0)
            assert all(rate == pytest.approx(5.0, rel=0.15) for rate in rates.values()), rates

    run(scenario())


def live_containers() -> int:
    return sum(1 for thing in gc.get_objects() if isinstance(thing, av.container.InputContainer))


def test_a_reconnect_leaves_nothing_of_the_last_connection_behind(
    rtsp_servers: StartRtspServer, test_video: Path
) -> None:
    # A dead connection's container, decoder and frames (about 25 MB at 1080p) must go
    # when it ends, not at the next full garbage collection: with the collector off,
    # each reconnect would otherwise leave one more container alive.
    server = rtsp_servers({"cam1": test_video}, port=free_port())

    async def scenario() -> None:
        async with running(make_config([{"id": "cam1", "url": server.url("cam1")}], stall_timeout_s=3)) as daemon:
            camera = sources(daemon)["cam1"]
            await wait_for(lambda: camera.state == "streaming", 20, "streaming")
            for restart in range(1, 4):
                server.kill()
                await wait_for(lambda: camera.state != "streaming", 10, "the camera to notice")
                server.start()
                await wait_for(
                    lambda n=restart: camera.state == "streaming" and camera.metrics.reconnects >= n,  # type: ignore[misc]
                    FAST_BACKOFF["max_s"] + 10.0,
                    f"streaming again after restart {restart}",
                )
                assert live_containers() == 1, f"after {restart} reconnects: {live_containers()} containers alive"

    gc.collect()
    gc.disable()
    try:
        run(scenario())
    finally:
        gc.enable()


def test_bad_cameras_get_a_state_and_a_metric_while_healthy_ones_keep_their_rate(
    rtsp_server: RtspTestServer,
) -> None:
    async def scenario(silent_port: int) -> None:
        cameras: list[dict[str, Any]] = [
            {"id": "healthy", "url": rtsp_server.url("cam1")},
            {"id": "wrong-path", "url": rtsp_server.url("no-such-mount")},
            {"id": "refused", "url": f"rtsp://127.0.0.1:{free_port()}/x"},
            {"id": "silent", "url": f"rtsp://127.0.0.1:{silent_port}/x", "open_timeout_s": 1.5},
        ]
        async with running(make_config(cameras, fps=5)) as daemon:
            await wait_for(lambda: all_streaming(daemon, ["healthy"]), 20, "the healthy camera")
            cams = sources(daemon)
            await wait_for(
                lambda: all(cams[i].reason is not None for i in ("wrong-path", "refused", "silent")),
                15,
                "every bad camera to report a reason",
            )
            rates = await sampled_rates(daemon, ["healthy"], 6.0)
            assert rates["healthy"] == pytest.approx(5.0, rel=0.10)
            text = scrape(daemon.http.port)
            for camera_id, reason in (
                ("wrong-path", "not_found"),
                ("refused", "connection_refused"),
                ("silent", "timeout"),
            ):
                assert cams[camera_id].state in ("backoff", "starting")
                assert cams[camera_id].reason == reason
                assert sample(text, "streamd_camera_up", camera=camera_id) == 0.0
                errors = sample(text, "streamd_camera_errors_total", camera=camera_id, reason=reason)
                assert errors is not None and errors >= 1
            assert cams["healthy"].metrics.reconnects == 0

    with silent_tcp_listener() as port:
        run(scenario(port))


def test_unauthorized_camera_and_password_never_leaks(
    rtsp_servers: StartRtspServer, test_video: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = "Pa55-word-xyz"
    server = rtsp_servers({"cam1": test_video}, credentials=f"viewer:{password}")

    async def scenario() -> str:
        cameras = [
            {"id": "good", "url": server.url("cam1", f"viewer:{password}")},
            {"id": "bad", "url": server.url("cam1", f"viewer:wrong-{password}")},
        ]
        async with running(make_config(cameras)) as daemon:
            await wait_for(lambda: all_streaming(daemon, ["good"]), 20, "camera with credentials")
            await wait_for(lambda: sources(daemon)["bad"].reason == "unauthorized", 10, "unauthorized")
            return scrape(daemon.http.port)

    caplog.set_level(logging.DEBUG)
    metrics = run(scenario())
    logged = "\n".join(caplog.text.splitlines())
    assert "rtsp://***@127.0.0.1" in logged
    assert password not in logged and password not in metrics
    assert sample(metrics, "streamd_camera_errors_total", camera="bad", reason="unauthorized") is not None


def test_stalled_stream_is_detected_and_recovers(rtsp_servers: StartRtspServer, test_video: Path) -> None:
    server = rtsp_servers({"cam1": test_video})

    async def scenario() -> None:
        async with running(make_config([{"id": "cam1", "url": server.url("cam1")}], stall_timeout_s=2)) as daemon:
            camera = sources(daemon)["cam1"]
            await wait_for(lambda: camera.state == "streaming", 20, "streaming")
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)  # connected, but silent
            try:
                took = await wait_for(lambda: camera.reason == "stalled", 8, "stall detection")
                assert took >= 1.5, "must not call a healthy stream stalled"
                # FFmpeg hands out held-back packets at the first read timeout; that must
                # not restart the count (it did: 4.0 s for a 2 s timeout).
                assert took <= 2 + 1.0, f"stalled declared after {took:.1f}s, for a 2s stall_timeout_s"
            finally:
                os.kill(server.pid, signal.SIGCONT)
            await wait_for(lambda: camera.state == "streaming", 10, "streaming again after the stall")

    run(scenario())


def test_local_file_is_replayed_in_a_loop_at_its_own_rate(test_video: Path) -> None:
    async def scenario() -> None:
        async with running(make_config([{"id": "replay", "url": str(test_video)}], fps=5)) as daemon:
            camera = sources(daemon)["replay"]
            await wait_for(lambda: camera.state == "streaming", 10, "streaming")
            rates = await sampled_rates(daemon, ["replay"], 8.0)  # longer than the 6 s clip
            assert rates["replay"] == pytest.approx(5.0, rel=0.15)
            assert camera.metrics.reconnects == 0, "looping a file is not a reconnect"

    run(scenario())


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="an NVIDIA GPU is present: NVDEC would work")
def test_nvdec_demanded_without_a_gpu_fails_that_camera_alone(test_video: Path) -> None:
    async def scenario() -> None:
        cameras = [{"id": "gpu", "url": str(test_video), "decode": "nvdec"}, {"id": "cpu", "url": str(test_video)}]
        async with running(make_config(cameras)) as daemon:
            cams = sources(daemon)
            await wait_for(lambda: cams["gpu"].state == "failed", 10, "the nvdec camera to fail")
            assert cams["gpu"].reason == "nvdec_unavailable"
            assert "NVDEC" in (cams["gpu"].message or "")
            await wait_for(lambda: cams["cpu"].state == "streaming", 10, "the auto camera to stream")
            assert cams["cpu"].decoder == "cpu"
            await asyncio.sleep(1.0)
            assert cams["gpu"].metrics.reconnects == 0, "a permanent failure is not retried"

    run(scenario())


def test_disabled_camera_is_not_opened(test_video: Path) -> None:
    async def scenario() -> None:
        cameras: list[dict[str, Any]] = [
            {"id": "on", "url": str(test_video)},
            {"id": "off", "url": str(test_video), "enabled": False},
        ]
        async with running(make_config(cameras)) as daemon:
            assert set(sources(daemon)) == {"on"}

    run(scenario())


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="an NVIDIA GPU is present: NVDEC would be used")
def test_decode_auto_without_a_gpu_decodes_on_the_cpu_and_says_so_once(
    rtsp_servers: StartRtspServer, test_video: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = rtsp_servers({"cam1": test_video})

    async def scenario() -> str:
        config = make_config([{"id": "auto", "url": server.url("cam1"), "decode": "auto"}])
        async with running(config) as daemon:
            camera = sources(daemon)["auto"]
            await wait_for(lambda: camera.state == "streaming", 20, "streaming")
            server.kill()  # a reconnect must not say it again
            await wait_for(lambda: camera.state != "streaming", 10, "the dead server")
            server.start()
            await wait_for(lambda: camera.state == "streaming", 10, "streaming again")
            assert camera.decoder == "cpu"
            return scrape(daemon.http.port)

    caplog.set_level(logging.INFO)
    metrics = run(scenario())
    said = [r.getMessage() for r in caplog.records if "NVDEC not used" in r.getMessage()]
    assert len(said) == 1 and "decoding on the CPU" in said[0] and "[auto]" in said[0]
    assert sample(metrics, "streamd_decoder_info", camera="auto", decoder="cpu") == 1.0
