"""One connection to one camera: open, demux, decode and sample, in a worker thread.

Everything here blocks (network reads, decoding), so it runs in the camera's own thread
and never on the event loop. PyAV releases the GIL while FFmpeg works, so many cameras
decode in parallel. Only sampled frames are converted out of YUV, the expensive step
after decoding itself.

A session ends by returning (stop requested, or the end of a local file) or by raising
CameraError with the reason; the CameraSource decides what happens next.

NVDEC, per camera (`decode: auto`): a connection tries NVDEC first, unless the process
has no NVDEC at all or this camera's NVDEC already failed. Until its first frame is
delivered the connection is on trial: a hardware open that fails, a packet the hardware
decoder rejects, or a first frame the GPU letterbox cannot convert ends the trial, and
the same session reconnects at once on the CPU. NVDEC's refusal of a stream it cannot
decode (H.264 4:2:2 or 10-bit, a picture beyond its limits, no decoder session or memory
left) does not come as an error of its own: FFmpeg's h264 decoder swallows the failed
hardware set-up and answers every packet with InvalidDataError, or (skipping frames)
with no frame at all. So on trial a run of undecodable packets, or packets after a
keyframe with no frame out of them, ends the trial too. After the trial, an error of
the GPU side (CuPy out of memory, a CUDA error, a frame format the GPU letterbox cannot
read after the stream switched to 10-bit) is this camera's, never a crash: `auto` moves
it to the CPU, `nvdec` retries it (`gpu_error`). When the CPU connection streams, NVDEC
is blamed for good (until the camera restarts), said once in the log and shown in
`streamd_decoder_info`. When the CPU fails too, the trouble was the camera or the
network, NVDEC is not blamed, and the camera retries as after any failure.
`decode: nvdec` never falls back: a failure that is NVDEC's for certain fails the
camera (`nvdec_unavailable`); one that may be the network's is retried.

NVDEC frames stay on the GPU (`is_hw_owned`) whatever the consumer; a host consumer's
conversion downloads the sampled ones. A `decode: auto` camera outside the NVDEC budget
(`streamd.camera.placement`) decodes on the CPU; when the plan moves a streaming camera,
its connection ends at the next keyframe and the session connects again at once with
the other decoder.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import av.error
import numpy as np
from av.codec.hwaccel import HWAccel

from streamd.camera.errors import CameraError, Reason, classify, explain_open_failure, refused_transport
from streamd.camera.keyframes import KeyframeGate
from streamd.camera.nvdec import nvdec_unavailable_reason
from streamd.camera.sampler import FrameSampler
from streamd.camera.state import CameraRun, Decoder
from streamd.config.schema import CameraConfig, DecodeFrames, DecodeMode, Transport
from streamd.frames.frame import Frame, StageTimes
from streamd.frames.letterbox import Letterbox
from streamd.gpu.context import primary_context_problem
from streamd.gpu.errors import raised_by_cupy
from streamd.metrics.registry import CameraMetrics

# PyAV enforces its timeouts by interrupting FFmpeg, and the RTSP demuxer reports the
# interrupt as whatever error it was in the middle of (often InvalidDataError). An error
# that arrives once the time limit has (almost) run out is therefore a timeout.
_TIMED_OUT = 0.95
_PROBE_DURATION_US = 500_000
_PROBE_BYTES = 1_000_000  # room for a 1080p keyframe
# After this many undecodable packets in a row the stream is broken, not glitching.
_MAX_CONSECUTIVE_DECODE_ERRORS = 100
# On NVDEC's trial: this many undecodable packets in a row (about a second at 25 fps), or
# this many packets decoded after the first keyframe (or keyframes, when only those are
# decoded) without a frame, and NVDEC is taken to have refused the stream.
_TRIAL_BAD_PACKETS = 25
_TRIAL_SILENT_PACKETS = 50
_TRIAL_SILENT_KEYFRAMES = 3


Converter = Callable[[av.VideoFrame], tuple[Any, Letterbox | None]]
ContainerOpener = Callable[[str, dict[str, str], tuple[float, float], HWAccel | None], Any]

# Open errors that mean the camera or the network, whichever decoder was asked for.
# What a camera, its network or its stream can raise; anything else is a bug of ours.
_STREAM_ERRORS = (av.error.FFmpegError, OSError, EOFError)
_NETWORK_REASONS = frozenset(
    {
        Reason.unauthorized,
        Reason.forbidden,
        Reason.not_found,
        Reason.connection_refused,
        Reason.timeout,
        Reason.end_of_stream,
        Reason.transport_refused,
        Reason.closed_by_server,
        Reason.not_rtsp,
        Reason.local_resources,
    }
)


def open_container(url: str, options: dict[str, str], timeout: tuple[float, float], hwaccel: HWAccel | None) -> Any:
    """The real thing: FFmpeg through PyAV. Tests stand in here for a GPU they do not have."""
    return av.open(url, options=options, timeout=timeout, hwaccel=hwaccel)


class NvdecFailure(Exception):
    """NVDEC could not decode this camera, or its frames could not be converted.

    `certain`: NVDEC's fault beyond doubt (no NVDEC for the codec, a rejected packet, an
    unreadable frame); otherwise the same error could have come from the network.
    `streaming`: it came after the trial, from a connection that had worked.
    """

    def __init__(self, message: str, certain: bool, streaming: bool = False) -> None:
        super().__init__(message)
        self.certain = certain
        self.streaming = streaming


def _gpu_side(error: BaseException) -> bool:
    """An error of the GPU side: CuPy's, or the GPU letterbox's (a frame format it cannot read)."""
    return raised_by_cupy(error) or type(error).__module__.startswith("streamd.gpu")


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
        camera_run: CameraRun | None = None,
        log: Callable[[str], None] | None = None,
        opener: ContainerOpener | None = None,
        keep_picture: Callable[[], bool] = lambda: False,
    ) -> None:
        self.camera = camera
        self.keep_picture = keep_picture
        self.deliver = deliver
        self.metrics = metrics
        self.stop = stop
        self.on_streaming = on_streaming
        self.convert = convert
        # What outlives this connection: frame numbers, the decoder verdict, the rate.
        self.camera_run = camera_run or CameraRun(camera.fps)
        self.log = log or (lambda message: None)
        self.opener = opener or open_container
        self._suspected_nvdec: str | None = None
        self._container: Any = None
        self._moved = False
        self._reset_connection(nvdec=False)

    def _reset_connection(self, nvdec: bool) -> None:
        self.sampler = FrameSampler(self.camera_run.fps)
        self._stall_baseline = 0.0
        self._last_pts: float | None = None
        self._last_pts_mono = 0.0
        self._last_advance_mono = 0.0
        self._streaming = False
        self._nvdec_trial = nvdec

    def run(self) -> None:
        while True:
            self._moved = False
            self._run_with(self._hwaccel())
            if not self._moved or self.stop.is_set():
                return
            # The NVDEC plan moved this camera: connect again at once with the other decoder.

    def _run_with(self, hwaccel: HWAccel | None) -> None:
        if hwaccel is None:
            self._connect(None)
            return
        try:
            self._connect(hwaccel)
        except NvdecFailure as failure:
            if self.camera.decode is DecodeMode.nvdec:
                if failure.streaming:
                    raise CameraError(Reason.gpu_error, f"NVDEC failed while streaming: {failure}") from failure
                if failure.certain:
                    raise CameraError(Reason.nvdec_unavailable, f"NVDEC failed: {failure}") from failure
                raise classify(failure.__cause__ or failure, streaming=False) from failure
            # Blamed only once the CPU streams where NVDEC did not (see the module doc).
            self._suspected_nvdec = str(failure)
            self._connect(None)

    def _connect(self, hwaccel: HWAccel | None) -> None:
        self._reset_connection(nvdec=hwaccel is not None)
        self.camera_run.decoder = Decoder.cpu if hwaccel is None else Decoder.nvdec
        container = self._open_or_explain(hwaccel)
        if container is None:
            self._connect(hwaccel)  # at once over UDP: the server answered, it is not down
            return
        try:
            self._read(container)
        except (CameraError, NvdecFailure):
            raise
        except Exception as exc:
            if not isinstance(exc, _STREAM_ERRORS):
                raise  # a bug (say, in frame conversion), not the camera: reported as a crash
            if self._streaming and time.monotonic() - self._stall_baseline >= self.camera.stall_timeout_s * _TIMED_OUT:
                raise CameraError(Reason.stalled, f"no frame for {self.camera.stall_timeout_s:g}s") from exc
            raise classify(exc, streaming=self._streaming) from exc
        finally:
            container.close()
            self._container = None  # the session may outlive the connection (in a traceback)

    def _open_or_explain(self, hwaccel: HWAccel | None) -> Any:
        """The opened container; None when `transport: auto` is to try UDP instead. A failure
        is raised as the camera's CameraError, NVDEC's NvdecFailure, or (a bug) as it came."""
        started = time.monotonic()
        try:
            return self._open(hwaccel)
        except CameraError:
            raise
        except Exception as exc:
            if time.monotonic() - started >= self.camera.open_timeout_s * _TIMED_OUT:
                error = CameraError(Reason.timeout, f"no answer within {self.camera.open_timeout_s:g}s")
            else:
                error = explain_open_failure(
                    self.camera.url, classify(exc, streaming=False), self.camera.open_timeout_s
                )
            if error.reason is Reason.transport_refused:
                if self._udp_instead_of_tcp():
                    return None
                error = refused_transport(self.camera_run.transport or self.camera.transport.value)
            if hwaccel is not None and getattr(exc, "errno", None) == errno.ENOTSUP:
                # FFmpeg's answer when the CUDA primary context is active with other flags.
                raise NvdecFailure(
                    f"cannot open the NVDEC decoder: {exc} (the GPU's CUDA primary context was started with "
                    "flags NVDEC cannot share)",
                    certain=True,
                ) from exc
            if hwaccel is not None and error.reason not in _NETWORK_REASONS:
                # PyAV says "no stream is compatible" with a plain RuntimeError.
                certain = isinstance(exc, (RuntimeError, NotImplementedError))
                raise NvdecFailure(f"cannot open the NVDEC decoder: {type(exc).__name__}: {exc}", certain) from exc
            if not isinstance(exc, _STREAM_ERRORS):
                raise  # a bug, not the camera: CameraSource reports it as a crash
            raise error from exc

    def _udp_instead_of_tcp(self) -> bool:
        """`transport: auto` and TCP was refused: UDP from now on, for this camera's run."""
        if self.camera.transport is not Transport.auto or self.camera_run.transport == "udp":
            return False
        self.camera_run.transport = "udp"
        self.log("transport auto: the server refuses RTSP over TCP (461); streaming over UDP from now on")
        return True

    def _hwaccel(self) -> HWAccel | None:
        """NVDEC settings for this connection, or None for CPU decode."""
        mode = self.camera.decode
        if mode is DecodeMode.cpu:
            return None
        reason = self._nvdec_refusal()
        if reason is not None:
            if mode is DecodeMode.nvdec:
                raise CameraError(Reason.nvdec_unavailable, f"NVDEC demanded but unavailable: {reason}")
            self._say_why_cpu(reason)
            return None
        if mode is DecodeMode.auto and not self.camera_run.nvdec_placed:
            return None  # beyond the NVDEC budget (streamd.camera.placement says so in the log)
        # Frames stay on the GPU (FFmpeg then shares the primary context, set up by
        # streamd.gpu.context): a GPU consumer letterboxes them there, a host one
        # downloads only the frames it samples (PyAV's reformat transfers a hardware
        # frame first). Copying every decoded frame down would move 3 MB a frame of
        # 1080p, most of them never analysed.
        return HWAccel(device_type="cuda", allow_software_fallback=False, is_hw_owned=True)

    def _nvdec_refusal(self) -> str | None:
        """Why NVDEC cannot decode this camera now, whatever the budget; None when it may."""
        return nvdec_unavailable_reason() or primary_context_problem() or self.camera_run.nvdec_failure

    def _plan_moved(self) -> bool:
        """Whether the NVDEC plan now wants this `decode: auto` camera on the other decoder."""
        if self.camera.decode is not DecodeMode.auto or self._nvdec_trial or self._suspected_nvdec is not None:
            return False
        on_nvdec = self.camera_run.decoder is Decoder.nvdec
        wanted = self.camera_run.nvdec_placed and self._nvdec_refusal() is None
        return on_nvdec != wanted

    def _say_why_cpu(self, reason: str) -> None:
        if not self.camera_run.fallback_logged:
            self.log(f"decode auto: NVDEC not used ({reason}); decoding on the CPU")
            self.camera_run.fallback_logged = True

    def _mark_streaming(self) -> None:
        self._streaming = True
        if self._suspected_nvdec is not None:
            self.camera_run.nvdec_failure, self._suspected_nvdec = self._suspected_nvdec, None
            self._say_why_cpu(self.camera_run.nvdec_failure)
        self.on_streaming()

    def _open(self, hwaccel: HWAccel | None) -> Any:
        options: dict[str, str] = {}
        if not self.camera.is_file:
            if self.camera_run.transport is None:
                auto = self.camera.transport is Transport.auto
                self.camera_run.transport = "tcp" if auto else self.camera.transport.value
            options["rtsp_transport"] = self.camera_run.transport
            # FFmpeg probes 5 s of stream by default before the first frame comes out,
            # then releases what it read in a burst (measured: 5.2 s to open a 5 fps
            # camera). The SDP already names the codec; half a second is plenty.
            options["analyzeduration"] = str(_PROBE_DURATION_US)
            options["probesize"] = str(_PROBE_BYTES)
        timeout = (self.camera.open_timeout_s, self.camera.stall_timeout_s)
        container = self.opener(self.camera.url, options, timeout, hwaccel)
        if not container.streams.video:
            container.close()
            raise CameraError(Reason.no_video, "the stream has no video track")
        return container

    def _read(self, container: Any) -> None:
        stream = container.streams.video[0]
        self._container = container
        # One thread per camera: with dozens of cameras the parallelism comes from the
        # cameras, and frame threading would add a frame of latency per thread.
        stream.codec_context.thread_count = 1
        gate = KeyframeGate(self.camera.decode_frames)
        self._skip_non_keyframes(stream.codec_context, gate.keyframes_only)
        pacer = _RealTimePacer() if self.camera.is_file else None
        self._stall_baseline = self._last_advance_mono = waiting_since = time.monotonic()
        consecutive_errors = 0
        trial = _TrialWatch() if self._nvdec_trial else None
        for packet in container.demux(stream):
            if self.stop.is_set():
                return
            # When PyAV's read timeout interrupts a silent RTSP stream, FFmpeg first hands
            # out the packets it held back (its reordering queue) instead of an error, and
            # only the next full timeout ends the read: a stall was declared after twice
            # `stall_timeout_s` (measured: 4.0 s for 2). A packet that took the whole
            # timeout to come is that flush: the stream has stalled now.
            waited = time.monotonic() - waiting_since
            if waited >= self.camera.stall_timeout_s * _TIMED_OUT:
                raise CameraError(Reason.stalled, f"no data for {waited:.1f}s")
            if packet.is_keyframe:
                if self._plan_moved():
                    self._moved = True
                    return
                self._at_keyframe(packet, gate, stream.codec_context)
            elif gate.keyframes_only:
                self._stall_baseline = time.monotonic()  # the skipped frames are ours to skip: it flows
            try:
                decode_start = time.monotonic()
                frames = packet.decode()
                decode_s = time.monotonic() - decode_start
                consecutive_errors = 0
            except av.error.InvalidDataError as exc:
                self.metrics.decode_error()
                consecutive_errors += 1
                if self._nvdec_trial and consecutive_errors >= _TRIAL_BAD_PACKETS:
                    raise NvdecFailure(
                        f"{consecutive_errors} packets in a row failed to decode on NVDEC ({exc}): "
                        "it refuses this stream",
                        certain=False,
                    ) from exc
                if consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise CameraError(
                        Reason.invalid_data, f"{consecutive_errors} packets in a row failed to decode: {exc}"
                    ) from exc
                waiting_since = time.monotonic()
                continue
            except Exception as exc:
                # Not bad data but a decoder that cannot work (a CUDA error, a missing
                # libnvcuvid): on NVDEC that is NVDEC's failure, not the camera's.
                if self._nvdec_trial or (self.camera_run.decoder is Decoder.nvdec and isinstance(exc, _STREAM_ERRORS)):
                    raise NvdecFailure(
                        f"decoding failed: {type(exc).__name__}: {exc}", certain=True, streaming=not self._nvdec_trial
                    ) from exc
                raise
            if trial is not None and self._nvdec_trial:
                decoded = packet.is_keyframe or not gate.keyframes_only
                if trial.silent(packet.is_keyframe, decoded, produced=bool(frames)):
                    raise NvdecFailure(
                        f"NVDEC decoded {trial.describe()} from the first keyframe on and gave no frame: "
                        "it refuses this stream",
                        certain=False,
                    )
            for frame in frames:
                if pacer is not None and frame.time is not None:
                    pacer.wait_until(frame.time, self.stop)
                self._on_frame(frame, decode_s)
            self._check_stall()
            waiting_since = time.monotonic()
        if not self.camera.is_file:
            raise CameraError(Reason.end_of_stream, "the server ended the stream")

    def _at_keyframe(self, packet: Any, gate: KeyframeGate, codec: Any) -> None:
        """Decide, before it is decoded, whether this GOP is decoded whole or keyframe only."""
        stamp = packet.pts if packet.pts is not None else packet.dts
        time_s = None if stamp is None or packet.time_base is None else float(stamp * packet.time_base)
        was = gate.keyframes_only
        analysis_interval = 1.0 / self.camera_run.fps
        only = gate.keyframe(time_s, analysis_interval)
        interval = gate.keyframe_interval
        if only != was:
            self._skip_non_keyframes(codec, only)
            what = "keyframes only" if only else "every frame again"
            every = f"every {interval:.2f}s" if interval is not None else "not yet timed"
            self.log(
                f"decode_frames auto: decoding {what} (keyframes {every}, analysed every {analysis_interval:.2f}s)"
            )
        elif (
            only
            and gate.mode is DecodeFrames.keyframes
            and interval is not None
            and interval > analysis_interval * 1.5
            and not self.camera_run.sparse_keyframes_logged
        ):
            self.camera_run.sparse_keyframes_logged = True
            self.log(
                f"decode_frames keyframes: keyframes come every {interval:.2f}s, so fewer than fps "
                f"{self.camera_run.fps:g} frames a second are analysed (decode_frames: auto would decode them all)"
            )

    def _skip_non_keyframes(self, codec: Any, skip: bool) -> None:
        codec.skip_frame = "NONKEY" if skip else "DEFAULT"
        self.camera_run.keyframes_only = skip

    def _on_frame(self, frame: av.VideoFrame, decode_s: float = 0.0) -> None:
        now = time.monotonic()
        run = self.camera_run
        run.last_decoded_mono = self._stall_baseline = now
        if run.picture is None or run.picture[0] != frame.width or run.picture[1] != frame.height:
            run.picture = (frame.width, frame.height)  # what it costs to decode (NVDEC plan)
        self.metrics.frame_decoded()
        if not self._streaming and not self._nvdec_trial:
            self._mark_streaming()
        timestamp = self._timestamp(frame, now)
        if self.sampler.fps != self.camera_run.fps:
            self.sampler.set_fps(self.camera_run.fps)  # lowered or restored under overload
        if timestamp is None or not self.sampler.take(timestamp):
            return
        self.metrics.frame_sampled()
        run.decode_lag_s = self._decode_lag(frame)
        try:
            image, box = self.convert(frame)
        except Exception as exc:
            if self._nvdec_trial or (self.camera_run.decoder is Decoder.nvdec and _gpu_side(exc)):
                raise NvdecFailure(
                    f"cannot convert its frames: {type(exc).__name__}: {exc}",
                    certain=True,
                    streaming=not self._nvdec_trial,
                ) from exc
            raise
        ready = time.monotonic()
        self.deliver(
            Frame(
                camera_id=self.camera.id,
                seq=self.camera_run.seq,
                pts=timestamp,
                captured_at=time.time(),
                captured_mono=now,
                width=frame.width,
                height=frame.height,
                image=image,
                letterbox=box,
                # Host frames only: NVDEC's surfaces belong to the decoder's small pool.
                picture=frame if frame.format.name != "cuda" and self.keep_picture() else None,
                times=StageTimes(decode_s=decode_s + (ready - now), ready_mono=ready),
            )
        )
        self.camera_run.seq += 1
        if self._nvdec_trial:
            self._nvdec_trial = False  # NVDEC has delivered a frame: it works for this camera
            self._mark_streaming()

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
            raise CameraError(
                Reason.frozen_timestamps, f"timestamps stuck at {pts:.3f}s for {now - self._last_advance_mono:.1f}s"
            )
        self._last_pts, self._last_pts_mono = pts, now
        return pts

    def _decode_lag(self, frame: av.VideoFrame) -> float | None:
        """Seconds from capture (the sender's wall clock) to now, where the stream says when it
        captured: FFmpeg's RTSP demuxer maps pts 0 to the wall clock of the first RTCP sender
        report (`start_time_realtime`, libavformat/rtsp.c), so capture = that + pts. A decoder
        that falls behind shows here; `captured_at`, stamped at decode, cannot show it. It
        includes any offset of the camera's clock from ours."""
        start_us = getattr(self._container, "start_time_realtime", None)
        if start_us is None or frame.time is None:
            return None
        return time.time() - (float(start_us) / 1e6 + frame.time)

    def _check_stall(self) -> None:
        silent = time.monotonic() - self._stall_baseline
        if silent > self.camera.stall_timeout_s:
            raise CameraError(Reason.stalled, f"no frame decoded for {silent:.1f}s")


class _TrialWatch:
    """Counts what NVDEC was given on trial since the first keyframe, until a frame comes."""

    def __init__(self) -> None:
        self.packets = self.keyframes = 0

    def silent(self, keyframe: bool, decoded: bool, produced: bool) -> bool:
        """After a packet: True when NVDEC has had enough of the stream to answer and has not."""
        if produced:
            self.packets = self.keyframes = 0
            return False
        if keyframe or self.keyframes:
            self.keyframes += keyframe
            self.packets += decoded
        return self.packets >= _TRIAL_SILENT_PACKETS or self.keyframes >= _TRIAL_SILENT_KEYFRAMES

    def describe(self) -> str:
        return f"{self.packets} packet(s) ({self.keyframes} keyframe(s))"


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
