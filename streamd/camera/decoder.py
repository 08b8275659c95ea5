"""One connection to one camera: open, demux, decode and sample, in a worker thread.

Everything here blocks (network reads, decoding), so it runs in the camera's own thread
and never on the event loop. PyAV releases the GIL while FFmpeg works, so many cameras
decode in parallel. Only sampled frames are converted out of YUV, the expensive step
after decoding itself.

A session ends by returning (stop requested, or the end of a local file) or by raising
SourceError with the reason; the CameraSource decides what happens next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import av
import av.error
import numpy as np
from av.codec.hwaccel import HWAccel

from streamd.camera.errors import Reason, SourceError, classify
from streamd.camera.nvdec import DecoderChoice, nvdec_unavailable_reason
from streamd.camera.sampler import FrameSampler
from streamd.config import CameraConfig, DecodeMode
from streamd.frame import Frame
from streamd.metrics import CameraMetrics
from streamd.preprocess import Letterbox

# PyAV enforces its timeouts by interrupting FFmpeg, and the RTSP demuxer reports the
# interrupt as whatever error it was in the middle of (often InvalidDataError). An error
# that arrives once the time limit has (almost) run out is therefore a timeout.
_TIMED_OUT = 0.95
_PROBE_DURATION_US = 500_000
_PROBE_BYTES = 1_000_000  # room for a 1080p keyframe
# After this many undecodable packets in a row the stream is broken, not glitching.
_MAX_CONSECUTIVE_DECODE_ERRORS = 100


Converter = Callable[[av.VideoFrame], tuple[Any, Letterbox | None]]


def to_rgb(frame: av.VideoFrame) -> tuple[np.ndarray, Letterbox | None]:
    """The whole picture as RGB; for consumers that are not the detector."""
    return frame.to_ndarray(format="rgb24"), None


class DecodeSession:
    def __init__(
        self,
        camera: CameraConfig,
        deliver: Callable[[Frame], None],
        metrics: CameraMetrics,
        stop: threading.Event,
        on_streaming: Callable[[], None],
        convert: Converter = to_rgb,
        choice: DecoderChoice | None = None,
        log: Callable[[str], None] | None = None,
        keep_on_gpu: bool = False,
    ) -> None:
        self.camera = camera
        self.deliver = deliver
        self.metrics = metrics
        self.stop = stop
        self.on_streaming = on_streaming
        self.convert = convert
        self.seq = 0
        self.choice = choice or DecoderChoice()
        self.keep_on_gpu = keep_on_gpu
        self.log = log or (lambda message: None)
        self.sampler = FrameSampler(camera.fps)
        self.last_decoded_mono: float | None = None
        self._stall_baseline = 0.0
        self._last_pts: float | None = None
        self._last_pts_mono = 0.0
        self._last_advance_mono = 0.0
        self._streaming = False

    def run(self) -> None:
        started = time.monotonic()
        try:
            container = self._open()
        except SourceError:
            raise
        except Exception as exc:
            if time.monotonic() - started >= self.camera.open_timeout_s * _TIMED_OUT:
                raise SourceError(Reason.timeout, f"no answer within {self.camera.open_timeout_s:g}s") from exc
            raise classify(exc, streaming=False) from exc
        try:
            self._read(container)
        except SourceError:
            raise
        except Exception as exc:
            if self._streaming and time.monotonic() - self._stall_baseline >= self.camera.stall_timeout_s * _TIMED_OUT:
                raise SourceError(Reason.stalled, f"no frame for {self.camera.stall_timeout_s:g}s") from exc
            raise classify(exc, streaming=self._streaming) from exc
        finally:
            container.close()

    def _hwaccel(self) -> HWAccel | None:
        """NVDEC settings for this connection, or None for CPU decode."""
        mode = self.camera.decode
        if mode is DecodeMode.cpu:
            return None
        reason = nvdec_unavailable_reason() or self.choice.nvdec_failure
        if reason is not None:
            if mode is DecodeMode.nvdec:
                raise SourceError(Reason.nvdec_unavailable, f"NVDEC demanded but unavailable: {reason}")
            self._note_fallback(reason)
            return None
        # With a GPU engine the frames stay on the device (the consumer letterboxes them
        # there); otherwise FFmpeg copies them back to system memory.
        return HWAccel(device_type="cuda", allow_software_fallback=False, is_hw_owned=self.keep_on_gpu)

    def _remember_nvdec_failure(self, error: BaseException) -> None:
        """NVDEC opened but failed to give a first frame: with `auto`, the next try is on the CPU.

        Network trouble (the stream ended, stalled, timed out) is not NVDEC's fault and
        does not count; undecodable data and unexpected errors (CUDA, the GPU letterbox) do.
        """
        if self.choice.decoder != "nvdec" or self._streaming or self.camera.decode is not DecodeMode.auto:
            return
        if isinstance(error, SourceError) and error.reason is not Reason.invalid_data:
            return
        self.choice.nvdec_failure = f"NVDEC failed before the first frame: {type(error).__name__}: {error}"

    def _note_fallback(self, reason: str) -> None:
        if not self.choice.fallback_logged:
            self.log(f"decode auto: NVDEC not used ({reason}); decoding on the CPU")
            self.choice.fallback_logged = True
        self.choice.decoder = "cpu"

    def _open(self) -> Any:
        options: dict[str, str] = {}
        if not self.camera.is_file:
            options["rtsp_transport"] = self.camera.transport.value
            # FFmpeg probes 5 s of stream by default before the first frame comes out,
            # then releases what it read in a burst (measured: 5.2 s to open a 5 fps
            # camera). The SDP already names the codec; half a second is plenty.
            options["analyzeduration"] = str(_PROBE_DURATION_US)
            options["probesize"] = str(_PROBE_BYTES)
        hwaccel = self._hwaccel()
        timeout = (self.camera.open_timeout_s, self.camera.stall_timeout_s)
        try:
            container = av.open(self.camera.url, options=options, timeout=timeout, hwaccel=hwaccel)
            self.choice.decoder = "cpu" if hwaccel is None else "nvdec"
        except (av.error.PermissionError, av.error.ExternalError, av.error.UnknownError) as exc:
            # The CUDA device or decoder could not be created (busy, out of sessions...).
            if hwaccel is None:
                raise
            if self.camera.decode is DecodeMode.nvdec:
                raise SourceError(Reason.nvdec_unavailable, f"cannot create an NVDEC (CUDA) decoder: {exc}") from exc
            self.choice.nvdec_failure = f"NVDEC decoder creation failed: {exc}"
            self._note_fallback(self.choice.nvdec_failure)
            container = av.open(self.camera.url, options=options, timeout=timeout)
        if not container.streams.video:
            container.close()
            raise SourceError(Reason.no_video, "the stream has no video track")
        return container

    def _read(self, container: Any) -> None:
        stream = container.streams.video[0]
        # One thread per camera: with dozens of cameras the parallelism comes from the
        # cameras, and frame threading would add a frame of latency per thread.
        stream.codec_context.thread_count = 1
        pacer = _RealTimePacer() if self.camera.is_file else None
        self._stall_baseline = self._last_advance_mono = time.monotonic()
        consecutive_errors = 0
        for packet in container.demux(stream):
            if self.stop.is_set():
                return
            try:
                frames = packet.decode()
                consecutive_errors = 0
            except av.error.InvalidDataError as exc:
                self.metrics.decode_error()
                consecutive_errors += 1
                if consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise SourceError(
                        Reason.invalid_data, f"{consecutive_errors} packets in a row failed to decode: {exc}"
                    ) from exc
                continue
            for frame in frames:
                if pacer is not None and frame.time is not None:
                    pacer.wait_until(frame.time, self.stop)
                self._on_frame(frame)
            self._check_stall()
        if not self.camera.is_file:
            raise SourceError(Reason.end_of_stream, "the server ended the stream")

    def _on_frame(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        self.last_decoded_mono = self._stall_baseline = now
        self.metrics.frame_decoded()
        if not self._streaming:
            self._streaming = True
            self.on_streaming()
        timestamp = self._timestamp(frame, now)
        if timestamp is None or not self.sampler.take(timestamp):
            return
        self.metrics.frame_sampled()
        image, box = self.convert(frame)
        self.deliver(
            Frame(
                camera_id=self.camera.id,
                seq=self.seq,
                pts=timestamp,
                captured_at=time.time(),
                captured_mono=now,
                width=frame.width,
                height=frame.height,
                image=image,
                letterbox=box,
            )
        )
        self.seq += 1

    def _timestamp(self, frame: av.VideoFrame, now: float) -> float | None:
        pts = frame.time
        if pts is None:
            # RTSP's first frame often has no timestamp until RTCP syncs the clock;
            # extrapolate from the last one by the wall clock, or skip the frame.
            if self._last_pts is None:
                return None
            pts = self._last_pts + (now - self._last_pts_mono)
        if self._last_pts is None or pts > self._last_pts:
            self._last_advance_mono = now
        elif now - self._last_advance_mono > self.camera.stall_timeout_s:
            raise SourceError(
                Reason.frozen_timestamps, f"timestamps stuck at {pts:.3f}s for {now - self._last_advance_mono:.1f}s"
            )
        self._last_pts, self._last_pts_mono = pts, now
        return pts

    def _check_stall(self) -> None:
        silent = time.monotonic() - self._stall_baseline
        if silent > self.camera.stall_timeout_s:
            raise SourceError(Reason.stalled, f"no frame decoded for {silent:.1f}s")


class _RealTimePacer:
    """Replays a local file at its own frame rate instead of as fast as it decodes."""

    def __init__(self) -> None:
        self._origin: float | None = None

    def wait_until(self, pts: float, stop: threading.Event) -> None:
        now = time.monotonic()
        if self._origin is None:
            self._origin = now - pts
        delay = self._origin + pts - now
        if delay > 0:
            stop.wait(delay)
