"""Decode lag: how long after the camera captured a frame it was decoded, by the sender's
clock (RTCP sender reports), so a decoder that falls behind shows, where `captured_at`
(stamped at decode) cannot. Against the real RTSP test server on loopback."""

from __future__ import annotations

import threading
import time
from typing import Any

import av
import pytest

from devtools.testing.rtsp import RtspTestServer
from streamd.camera.decoder import DecodeSession
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig
from streamd.frames.frame import Frame
from streamd.frames.letterbox import Letterbox, letterbox
from streamd.metrics.registry import Metrics

pytestmark = pytest.mark.rtsp


def lags_while_streaming(server: RtspTestServer, seconds: float, convert_s: float) -> list[tuple[float, float]]:
    """(seconds since start, decode lag) for each sampled frame; `convert_s`: how long each
    sampled frame holds the decode thread (a decoder slower than the camera)."""
    camera = CameraConfig(id="cam", url=server.url("cam1"), fps=5)
    run, stop, lags = CameraRun(camera.fps), threading.Event(), list[tuple[float, float]]()
    started = time.monotonic()

    def convert(frame: av.VideoFrame) -> tuple[Any, Letterbox | None]:
        time.sleep(convert_s)
        return letterbox(frame, 64, 64)

    def deliver(frame: Frame) -> None:
        if run.decode_lag_s is not None:
            lags.append((time.monotonic() - started, run.decode_lag_s))
        if time.monotonic() - started > seconds:
            stop.set()

    DecodeSession(camera, deliver, Metrics().camera("cam"), stop, lambda: None, convert, run).run()
    return lags


def test_decode_lag_is_small_while_decoding_keeps_up_and_grows_when_it_falls_behind(
    rtsp_server: RtspTestServer,
) -> None:
    keeping_up = lags_while_streaming(rtsp_server, 6.0, convert_s=0.0)
    assert keeping_up, "the server's RTCP sender reports give every frame a capture time"
    assert all(0.0 <= lag < 0.5 for _, lag in keeping_up), keeping_up
    # Each sampled frame now holds the thread 0.4 s: 2 s of work for each second of video,
    # so the lag grows by about half a second a second from the first capture time on
    # (the first RTCP report may itself be read late, the decoder being behind).
    behind = lags_while_streaming(rtsp_server, 12.0, convert_s=0.4)
    (first_at, first), (last_at, last) = behind[0], behind[-1]
    assert last_at - first_at >= 3.0, behind
    assert last - first > 0.3 * (last_at - first_at), behind
