"""DecodeSession's per-frame rules, fed real PyAV frames (no network needed)."""

from __future__ import annotations

import threading
import time
from fractions import Fraction

import av
import pytest

from streamd.camera.decoder import DecodeSession
from streamd.camera.errors import Reason, SourceError
from streamd.config import CameraConfig
from streamd.frame import Frame
from streamd.metrics import Metrics


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
    with pytest.raises(SourceError) as caught:
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


def test_nvdec_settings_follow_the_mode_and_the_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamd.camera.decoder as decoder_module
    from streamd.config import DecodeMode

    def session_for(mode: str, keep_on_gpu: bool) -> DecodeSession:
        camera = CameraConfig(id="cam", url="rtsp://127.0.0.1/x", decode=DecodeMode(mode))
        return DecodeSession(
            camera, lambda f: None, Metrics().camera("cam"), threading.Event(), lambda: None, keep_on_gpu=keep_on_gpu
        )

    # The edge: pretend the driver probe found a GPU.
    monkeypatch.setattr(decoder_module, "nvdec_unavailable_reason", lambda: None)
    on_device = session_for("auto", keep_on_gpu=True)._hwaccel()
    assert on_device is not None and on_device.is_hw_owned and not on_device.allow_software_fallback
    to_host = session_for("nvdec", keep_on_gpu=False)._hwaccel()
    assert to_host is not None and not to_host.is_hw_owned
    assert session_for("cpu", keep_on_gpu=True)._hwaccel() is None

    # And when it found none: auto falls back (once), nvdec refuses.
    monkeypatch.setattr(decoder_module, "nvdec_unavailable_reason", lambda: "no NVIDIA driver")
    said: list[str] = []
    auto = session_for("auto", keep_on_gpu=True)
    auto.log = said.append
    assert auto._hwaccel() is None and auto._hwaccel() is None
    assert said == ["decode auto: NVDEC not used (no NVIDIA driver); decoding on the CPU"]
    with pytest.raises(SourceError) as caught:
        session_for("nvdec", keep_on_gpu=False)._hwaccel()
    assert caught.value.reason is Reason.nvdec_unavailable and "no NVIDIA driver" in str(caught.value)


def test_nvdec_that_fails_before_its_first_frame_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamd.camera.decoder as decoder_module
    from streamd.config import DecodeMode

    monkeypatch.setattr(decoder_module, "nvdec_unavailable_reason", lambda: None)  # the edge: a GPU is there
    camera = CameraConfig(id="cam", url="rtsp://127.0.0.1/x", decode=DecodeMode.auto)
    first = DecodeSession(camera, lambda f: None, Metrics().camera("cam"), threading.Event(), lambda: None)
    assert first._hwaccel() is not None
    first.choice.decoder = "nvdec"  # as after a successful NVDEC open
    first._remember_nvdec_failure(SourceError(Reason.end_of_stream, "the server ended the stream"))
    assert first.choice.nvdec_failure is None, "network trouble is not NVDEC's fault"
    first._remember_nvdec_failure(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY"))
    said: list[str] = []
    again = DecodeSession(
        camera,
        lambda f: None,
        Metrics().camera("cam"),
        threading.Event(),
        lambda: None,
        choice=first.choice,
        log=said.append,
    )
    assert again._hwaccel() is None, "the reconnect decodes on the CPU"
    assert "NVDEC failed before the first frame: RuntimeError: CUDA_ERROR_OUT_OF_MEMORY" in said[0]
