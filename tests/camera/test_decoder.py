"""DecodeSession's per-frame rules, fed real PyAV frames (no network needed)."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import pytest

from streamd.camera.decoder import DecodeSession
from streamd.camera.errors import CameraError, Reason
from streamd.config.schema import CameraConfig
from streamd.frames.frame import Frame
from streamd.metrics.registry import Metrics


def session(stall_timeout_s: float = 10.0, fps: float = 5.0) -> tuple[DecodeSession, list[Frame]]:
    camera = CameraConfig(id="cam", url="rtsp://127.0.0.1/x", fps=fps, stall_timeout_s=stall_timeout_s)
    delivered: list[Frame] = []
    return DecodeSession(camera, delivered.append, Metrics().camera("cam"), threading.Event(), lambda: None), delivered


def frame(pts: int | None) -> av.VideoFrame:
    picture = av.VideoFrame(64, 48, "yuv420p")
    picture.pts = pts
    picture.time_base = Fraction(1, 25)
    return picture


def test_frames_are_sampled_converted_and_numbered() -> None:
    decode, delivered = session(fps=5)
    for pts in range(50):  # 2 s at 25 fps
        decode._on_frame(frame(pts))
    assert [f.seq for f in delivered] == list(range(10))
    assert [f.pts for f in delivered][:3] == pytest.approx([0.0, 0.2, 0.4])
    first = delivered[0]
    assert (first.width, first.height, first.image.shape, first.camera_id) == (64, 48, (48, 64, 3), "cam")
    assert decode.metrics.decoded == 50 and decode.metrics.sampled == 10


def test_frame_without_timestamp_before_any_is_decoded_but_not_sampled() -> None:
    decode, delivered = session()
    decode._on_frame(frame(None))
    assert decode.metrics.decoded == 1 and delivered == []
    decode._on_frame(frame(0))
    assert len(delivered) == 1


def test_frozen_timestamps_end_the_session_after_the_stall_timeout() -> None:
    decode, _ = session(stall_timeout_s=0.3)
    decode._on_frame(frame(100))
    start = time.monotonic()
    with pytest.raises(CameraError) as caught:
        while time.monotonic() - start < 2:
            decode._on_frame(frame(100))
            time.sleep(0.02)
    assert caught.value.reason is Reason.frozen_timestamps
    assert time.monotonic() - start >= 0.3


def test_advancing_timestamps_never_count_as_frozen() -> None:
    decode, _ = session(stall_timeout_s=0.2)
    start = time.monotonic()
    pts = 0
    while time.monotonic() - start < 0.5:
        decode._on_frame(frame(pts))
        pts += 1
        time.sleep(0.01)
