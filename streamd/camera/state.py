"""What one camera is doing, kept in one place that outlives its connections.

A camera's run (from `start` to `stop`) spans many connections: each reconnect is a new
DecodeSession, but the frame numbering, the time of the last frame, the decoder verdict
and the rate it is sampled at belong to the camera and carry on. A restart (a changed
config) begins a new run.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CameraState(StrEnum):
    starting = "starting"
    """Connecting (again, after `backoff`); `reason` keeps the last failure's."""
    streaming = "streaming"
    backoff = "backoff"
    """Waiting before the next attempt after a failure."""
    stopped = "stopped"
    failed = "failed"
    """A permanent error (a missing file, NVDEC demanded and absent): not retried."""


class Detached(StrEnum):
    """Why a camera's frames stop coming to analysis (its open tracks end with this)."""

    removed = "camera_removed"
    restarted = "camera_restarted"
    """Its settings changed: it starts again at once."""
    stopped = "stopped"
    """The daemon is stopping: what is in flight is still analysed."""
    finished = "finished"
    """A recorded input's frames are all analysed (`streamd detect`)."""

    @property
    def gone(self) -> bool:
        """It will not come back: its counts, series and snapshots are forgotten."""
        return self in (Detached.removed, Detached.finished)


class Decoder(StrEnum):
    cpu = "cpu"
    nvdec = "nvdec"


@dataclass
class CameraRun:
    fps: float
    """The rate frames are sampled at now: the configured one, unless overload lowered it."""
    state: CameraState = CameraState.stopped
    reason: str | None = None
    """Why the camera is not streaming (a `Reason` value), or None."""
    message: str | None = None
    decoder: Decoder = Decoder.cpu
    """The decoder of the current connection."""
    nvdec_failure: str | None = None
    """Why NVDEC failed for this camera (confirmed by the CPU streaming where it did not);
    it is not tried again until the camera restarts."""
    fallback_logged: bool = False
    nvdec_placed: bool = True
    """Whether the NVDEC budget has room for this camera (`streamd.camera.placement`);
    with `decode: auto` a camera outside it decodes on the CPU."""
    transport: str | None = None
    """The RTSP transport in use (`tcp` or `udp`; `transport: auto` settles on one), None
    for files."""
    keyframes_only: bool = False
    """Whether the current connection decodes keyframes only (`decode_frames`)."""
    sparse_keyframes_logged: bool = False
    seq: int = 0
    """The next sampled frame's number: frames are numbered across reconnects."""
    last_decoded_mono: float | None = None
    """time.monotonic() of the last decoded frame, or None before the first."""
    picture: tuple[int, int] | None = None
    """Width and height of the last decoded frame."""
    decode_lag_s: float | None = None
    """How long after the camera captured it (by the sender's clock, from RTCP) the last
    sampled frame was decoded; None where the stream does not say when it captured."""
    streaming_since: float | None = None


@dataclass(frozen=True)
class CameraStatus:
    """What one camera is doing, read at once: what observers (health, `/status`, the rate
    log, the sinks' state topics) read of a camera, never its working parts."""

    camera_id: str
    url: str
    """The configured URL with its credentials masked."""
    priority: int
    target_fps: float
    """The configured `fps`."""
    sampling_fps: float
    """The rate sampled now: `fps`, unless overload lowered it."""
    state: CameraState
    reason: str | None
    message: str | None
    decoder: Decoder
    transport: str | None
    keyframes_only: bool
    decode_lag_s: float | None
    last_frame_mono: float | None
    decoded: int
    sampled: int
    replaced: int
    reconnects: int
