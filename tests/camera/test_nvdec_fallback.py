"""decode auto: a camera whose NVDEC fails goes to the CPU by itself, says why once, and
shows it in the metrics; decode nvdec never falls back. Driven through the public
`DecodeSession.run()` and `CameraSource`, on real video files.

The edges stood in for: the driver probe (this machine has no GPU), a hardware decoder
that rejects packets, a GPU letterbox that fails. The hardware open failures are real
FFmpeg ones: FFV1 has no NVDEC decoder ("no stream is compatible"), and a CUDA device
index that cannot exist fails device creation on any machine.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from av.codec.hwaccel import HWAccel

import streamd.camera.decoder as decoder_module
from streamd.camera.decoder import DecodeSession, open_container
from streamd.camera.errors import CameraError, Reason
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig, DecodeMode
from streamd.frames.frame import Frame
from streamd.frames.letterbox import letterbox
from streamd.gpu.preprocess import UnsupportedFrameFormat
from streamd.metrics.registry import Metrics

Opener = Callable[[str, dict[str, str], tuple[float, float], HWAccel | None], Any]


@pytest.fixture(autouse=True)
def a_gpu_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge: the driver probe says NVDEC may work here."""
    monkeypatch.setattr(decoder_module, "nvdec_unavailable_reason", lambda: None)


@pytest.fixture(scope="module")
def ffv1_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A codec NVDEC does not decode: PyAV raises RuntimeError for the hardware open."""
    path = tmp_path_factory.mktemp("video") / "ffv1.mkv"
    with av.open(str(path), "w") as output:
        stream = output.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(50):
            picture = np.full((120, 160, 3), index * 5, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


class Recorder:
    """Runs sessions of one camera as its CameraSource would, and keeps what they did."""

    def __init__(self, url: Path | str, mode: DecodeMode = DecodeMode.auto) -> None:
        self.camera = CameraConfig(id="cam", url=str(url), decode=mode, fps=5)
        self.camera_run = CameraRun(self.camera.fps)
        self.said: list[str] = []
        self.frames: list[Frame] = []
        self.hardware_asked: list[bool] = []

    def run(
        self, opener: Opener = open_container, convert: Callable[[Any], Any] | None = None, frames: int = 3
    ) -> None:
        stop = threading.Event()

        def deliver(frame: Frame) -> None:
            self.frames.append(frame)
            if len(self.frames) >= frames:
                stop.set()

        def recording_opener(url: str, options: dict[str, str], timeout: tuple[float, float], hw: Any) -> Any:
            self.hardware_asked.append(hw is not None)
            return opener(url, options, timeout, hw)

        DecodeSession(
            self.camera,
            deliver,
            Metrics().camera("cam"),
            stop,
            lambda: None,
            convert=convert or (lambda frame: letterbox(frame, 64, 64)),
            camera_run=self.camera_run,
            log=self.said.append,
            opener=recording_opener,
        ).run()


def impossible_device(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
    """A real FFmpeg device-creation failure: CUDA device 99 exists nowhere."""
    if hw is not None:
        hw = HWAccel(device_type="cuda", device="99", allow_software_fallback=False)
    return open_container(url, options, timeout, hw)


class _RejectedPacket:
    """The real packet's fields, but decoding it fails."""

    def __init__(self, packet: av.Packet) -> None:
        self.is_keyframe = packet.is_keyframe
        self.pts, self.dts, self.time_base = packet.pts, packet.dts, packet.time_base

    def decode(self) -> list[av.VideoFrame]:
        raise OSError(errno.ENOSYS, "Function not implemented")


class _HardwareDecoder:
    """A real container whose packets decode as `packet_type` says the hardware does."""

    def __init__(self, container: Any, packet_type: Callable[[av.Packet], Any]) -> None:
        self._container, self._packet_type = container, packet_type
        self.streams = container.streams

    def demux(self, stream: Any) -> Iterator[Any]:
        for packet in self._container.demux(stream):
            yield self._packet_type(packet)

    def close(self) -> None:
        self._container.close()


def rejects_packets(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
    container = open_container(url, options, timeout, None)
    # As NVDEC without libnvcuvid behaves: the device opened, every packet fails.
    return _HardwareDecoder(container, _RejectedPacket) if hw is not None else container


def assert_fell_back_once(recorder: Recorder, why: str) -> None:
    assert recorder.camera_run.decoder == "cpu"
    assert recorder.camera_run.nvdec_failure is not None and why in recorder.camera_run.nvdec_failure
    assert len(recorder.frames) >= 3, "the camera streams on the CPU"
    assert recorder.hardware_asked == [True, False], "NVDEC once, then at once the CPU, in the same session"
    assert len(recorder.said) == 1 and "NVDEC not used" in recorder.said[0] and why in recorder.said[0]
    # The next connection (a reconnect) goes straight to the CPU and says nothing more.
    recorder.run()
    assert recorder.hardware_asked[2:] == [False] and len(recorder.said) == 1


def test_codec_without_nvdec_falls_back_to_the_cpu(ffv1_video: Path) -> None:
    recorder = Recorder(ffv1_video)
    recorder.run()  # the real opener: PyAV's "no stream is compatible"
    assert_fell_back_once(recorder, "RuntimeError")


def test_failed_device_creation_falls_back_to_the_cpu(test_video: Path) -> None:
    recorder = Recorder(test_video)
    recorder.run(impossible_device)
    assert_fell_back_once(recorder, "cannot open the NVDEC decoder")


def test_packets_the_hardware_rejects_fall_back_to_the_cpu(test_video: Path) -> None:
    recorder = Recorder(test_video)
    recorder.run(rejects_packets)
    assert_fell_back_once(recorder, "decoding failed: OSError")


def test_first_frame_the_gpu_letterbox_cannot_convert_falls_back_to_the_cpu(test_video: Path) -> None:
    recorder = Recorder(test_video)

    def pretend_nvdec(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        return open_container(url, options, timeout, None)  # frames come, as from NVDEC

    def gpu_letterbox(frame: av.VideoFrame) -> Any:
        if recorder.hardware_asked[-1]:
            raise RuntimeError("nvrtc: NVRTC_ERROR_BUILTIN_OPERATION_FAILURE")
        return letterbox(frame, 64, 64)

    recorder.run(pretend_nvdec, gpu_letterbox)
    assert_fell_back_once(recorder, "cannot convert its frames: RuntimeError")


def test_network_errors_are_not_blamed_on_nvdec() -> None:
    from devtools.testing.ports import free_port

    recorder = Recorder(f"rtsp://127.0.0.1:{free_port()}/cam")  # nobody listens
    with pytest.raises(CameraError) as caught:
        recorder.run(impossible_device)
    # The network fails before any decoder exists: no CPU attempt, nothing blamed.
    assert caught.value.reason is Reason.connection_refused
    assert recorder.hardware_asked == [True] and recorder.camera_run.nvdec_failure is None and recorder.said == []


def test_nvdec_is_not_blamed_when_the_cpu_fails_too(test_video: Path) -> None:
    from devtools.testing.ports import free_port

    recorder = Recorder(f"rtsp://127.0.0.1:{free_port()}/cam")

    def both_fail(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        if hw is not None:  # a real device failure, ambiguous by its class (an OSError)
            return impossible_device(str(test_video), {}, timeout, hw)
        return open_container(url, options, timeout, None)  # a real refused connection

    with pytest.raises(CameraError) as caught:
        recorder.run(both_fail)
    assert caught.value.reason is Reason.connection_refused
    assert recorder.hardware_asked == [True, False]
    assert recorder.camera_run.nvdec_failure is None and recorder.said == [], "NVDEC is tried again next time"


def test_decode_nvdec_fails_the_camera_only_when_nvdec_is_at_fault(ffv1_video: Path, test_video: Path) -> None:
    certain = Recorder(ffv1_video, DecodeMode.nvdec)
    with pytest.raises(CameraError) as caught:
        certain.run()
    assert caught.value.reason is Reason.nvdec_unavailable and caught.value.permanent
    assert certain.hardware_asked == [True], "nvdec mode never tries the CPU"

    maybe_network = Recorder(test_video, DecodeMode.nvdec)
    with pytest.raises(CameraError) as caught:
        maybe_network.run(impossible_device)
    assert not caught.value.permanent, "an error the network could also cause is retried"


class _DeviceFrame:
    """A decoded frame as PyAV gives it with `is_hw_owned=True`: it stays in GPU memory
    until something reads its pixels; `reformat` (what `letterbox` and `to_ndarray`
    call) downloads it first (av/video/reformatter.py, av_hwframe_transfer_data)."""

    downloads = 0

    def __init__(self, frame: av.VideoFrame) -> None:
        self._frame = frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frame, name)

    def reformat(self, *args: Any, **kwargs: Any) -> av.VideoFrame:
        _DeviceFrame.downloads += 1
        return self._frame.reformat(*args, **kwargs)


class _DevicePacket:
    def __init__(self, packet: av.Packet) -> None:
        self._packet = packet
        self.is_keyframe = packet.is_keyframe
        self.pts, self.dts, self.time_base = packet.pts, packet.dts, packet.time_base

    def decode(self) -> list[_DeviceFrame]:
        return [_DeviceFrame(frame) for frame in self._packet.decode()]


def test_nvdec_frames_stay_on_the_gpu_and_a_host_consumer_downloads_only_sampled_ones(test_video: Path) -> None:
    asked: list[HWAccel | None] = []

    def device_frames(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        asked.append(hw)
        container = open_container(url, options, timeout, None)
        return _HardwareDecoder(container, _DevicePacket) if hw is not None and hw.is_hw_owned else container

    _DeviceFrame.downloads = 0
    recorder = Recorder(test_video)  # an engine on the host: ONNX Runtime's letterbox on the CPU
    metrics = Metrics().camera("cam")
    stop = threading.Event()
    delivered: list[Frame] = []

    def deliver(frame: Frame) -> None:
        delivered.append(frame)
        if len(delivered) >= 4:
            stop.set()

    def to_model(frame: av.VideoFrame) -> tuple[Any, Any]:
        return letterbox(frame, 64, 64)

    DecodeSession(recorder.camera, deliver, metrics, stop, lambda: None, to_model, opener=device_frames).run()
    (hw,) = asked
    assert hw is not None and hw.is_hw_owned, "frames stay in GPU memory, whatever the engine"
    assert not hw.allow_software_fallback  # type: ignore[attr-defined]  # public, not in PyAV's stub
    assert _DeviceFrame.downloads == metrics.sampled == len(delivered) == 4
    assert metrics.decoded >= 4 * 25 / 5 - 5, "about five frames decoded for each one sampled"


def test_camera_source_shows_the_fallback_in_metrics_and_logs_it_once(
    ffv1_video: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    from streamd.camera.slot import LatestFrameSlot
    from streamd.camera.source import CameraSource
    from tests.support.waiting import wait_for

    metrics = Metrics()
    camera = CameraConfig(id="ffv1", url=str(ffv1_video), decode=DecodeMode.auto, fps=5)

    async def scenario() -> None:
        source = CameraSource(camera, LatestFrameSlot(asyncio.get_running_loop()), metrics.camera("ffv1"))
        metrics.watch_cameras(lambda: [source], ["streaming", "backoff"], "streaming")
        source.start()
        # The 2 s file loops: every loop is a new connection, and none repeats the news.
        await wait_for(lambda: source.metrics.sampled >= 15, 15, "three loops of the file")
        assert source.decoder == "cpu" and source.state == "streaming"
        await source.stop()

    with caplog.at_level(logging.INFO, logger="streamd.camera.source"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "NVDEC" in r.getMessage()]
    assert len(said) == 1 and "RuntimeError" in said[0] and "[ffv1]" in said[0]
    from prometheus_client import generate_latest

    exposition = generate_latest(metrics.registry).decode()
    assert 'streamd_decoder_info{camera="ffv1",decoder="cpu"} 1.0' in exposition


def test_probe_names_a_driver_without_its_video_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    import streamd.camera.nvdec as nvdec

    def driver_without_video(name: str) -> object:  # the edge: the driver's shared libraries
        if name == "libnvcuvid.so.1":
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", driver_without_video)
    reason = nvdec.nvdec_unavailable_reason.__wrapped__()
    assert reason is not None and "libnvcuvid.so.1" in reason and "`video` driver capability" in reason


class _FfmpegRefusal:
    """A real packet's fields; decoding it does what FFmpeg's h264 decoder does once
    NVDEC refused the stream: InvalidDataError for every packet, or nothing at all."""

    def __init__(self, packet: av.Packet, silent: bool) -> None:
        self.is_keyframe = packet.is_keyframe
        self.pts, self.dts, self.time_base = packet.pts, packet.dts, packet.time_base
        self._silent = silent

    def decode(self) -> list[av.VideoFrame]:
        if self._silent:
            return []
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")


def refused_by_nvdec(silent: bool) -> Opener:
    def opener(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
        container = open_container(url, options, timeout, None)
        refusal = functools.partial(_FfmpegRefusal, silent=silent)
        return _HardwareDecoder(container, refusal) if hw is not None else container

    return opener


def test_a_stream_nvdec_refuses_as_bad_data_falls_back_to_the_cpu(test_video: Path) -> None:
    recorder = Recorder(test_video)
    recorder.run(refused_by_nvdec(silent=False))
    assert_fell_back_once(recorder, "packets in a row failed to decode on NVDEC")


def test_a_stream_nvdec_answers_with_no_frames_falls_back_to_the_cpu(test_video: Path) -> None:
    recorder = Recorder(test_video)
    recorder.run(refused_by_nvdec(silent=True))
    assert_fell_back_once(recorder, "gave no frame")


class OutOfMemoryError(Exception):
    """Stands in for CuPy's, where CuPy defines it (the decoder knows GPU errors by that)."""


OutOfMemoryError.__module__ = "cupy.cuda.memory"


def gpu_fails_after(frames: int, error: Exception, recorder: Recorder) -> Callable[[Any], Any]:
    """A GPU letterbox that works for `frames` frames of NVDEC, then raises `error`."""
    converted = [0]

    def convert(frame: av.VideoFrame) -> Any:
        if recorder.hardware_asked[-1]:
            converted[0] += 1
            if converted[0] > frames:
                raise error
        return letterbox(frame, 64, 64)

    return convert


def pretend_nvdec(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
    return open_container(url, options, timeout, None)  # frames come, as from NVDEC


# Factories, not instances: an exception object pytest keeps for the session would keep
# the traceback of its raise, and the decoder's frames and container with it.
@pytest.mark.parametrize(
    "make_error",
    [
        lambda: OutOfMemoryError("Out of memory allocating 3,110,400 bytes"),
        lambda: UnsupportedFrameFormat("NVDEC gives p010le frames; the GPU letterbox reads nv12"),
    ],
    ids=["cupy-out-of-memory", "switch-to-10-bit"],
)
def test_a_gpu_error_while_streaming_moves_that_camera_to_the_cpu(
    test_video: Path, make_error: Callable[[], Exception]
) -> None:
    recorder = Recorder(test_video)
    error = make_error()
    recorder.run(pretend_nvdec, gpu_fails_after(4, error, recorder), frames=8)
    assert recorder.hardware_asked == [True, False], "NVDEC, then the CPU in the same session: no crash"
    assert len(recorder.frames) >= 8 and recorder.camera_run.decoder == "cpu"
    assert recorder.camera_run.nvdec_failure is not None and type(error).__name__ in recorder.camera_run.nvdec_failure


def test_a_gpu_error_while_streaming_with_decode_nvdec_is_a_retried_camera_error(test_video: Path) -> None:
    recorder = Recorder(test_video, DecodeMode.nvdec)
    with pytest.raises(CameraError) as caught:
        recorder.run(pretend_nvdec, gpu_fails_after(4, OutOfMemoryError("Out of memory"), recorder), frames=8)
    assert caught.value.reason is Reason.gpu_error and not caught.value.permanent
    assert recorder.hardware_asked == [True]


def test_a_bug_in_conversion_on_the_cpu_is_still_a_bug(test_video: Path) -> None:
    recorder = Recorder(test_video, DecodeMode.cpu)

    def buggy(frame: av.VideoFrame) -> Any:
        raise KeyError("width")

    with pytest.raises(KeyError):
        recorder.run(convert=buggy)


def primary_context_in_use(url: str, options: dict[str, str], timeout: tuple[float, float], hw: HWAccel | None) -> Any:
    """FFmpeg's hardware open when the CUDA primary context is active with other flags:
    cuda_context_init returns AVERROR(ENOTSUP), which PyAV raises as its OSError."""
    if hw is not None:
        av.error.err_check(-errno.ENOTSUP)
    return open_container(url, options, timeout, None)


def test_enotsup_from_the_hardware_open_is_nvdecs_failure_not_the_cameras(test_video: Path) -> None:
    demanded = Recorder(test_video, DecodeMode.nvdec)
    with pytest.raises(CameraError) as caught:
        demanded.run(primary_context_in_use)
    # Not "unreachable" and retried forever: NVDEC's, for certain, and said so.
    assert caught.value.reason is Reason.nvdec_unavailable and "primary context" in str(caught.value)
    auto = Recorder(test_video)
    auto.run(primary_context_in_use)
    assert_fell_back_once(auto, "primary context")


def test_a_primary_context_nvdec_cannot_share_sends_auto_cameras_to_the_cpu_at_once(test_video: Path) -> None:
    from streamd.gpu.context import share_primary_context
    from tests.support.libcuda import Libcuda

    try:
        assert share_primary_context(Libcuda(flags=0, active=True)) is not None
        # Frames stay on the GPU for every consumer, so every NVDEC open shares the context.
        camera = Recorder(test_video)
        camera.run(pretend_nvdec)
        assert camera.hardware_asked == [False] and "primary context" in camera.said[0]
    finally:
        share_primary_context(Libcuda())
