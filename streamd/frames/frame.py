"""A sampled frame on its way from a camera to analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamd.frames.letterbox import Letterbox


@dataclass(slots=True)
class StageTimes:
    """When a frame passed each stage, for `streamd_stage_seconds` (monotonic seconds)."""

    decode_s: float = 0.0
    """Decoding its packet and converting it, in the camera's thread."""
    ready_mono: float = 0.0
    """Put into the camera's slot."""
    taken_mono: float = 0.0
    """Taken from the slot into a batch."""


@dataclass(frozen=True, slots=True)
class Frame:
    camera_id: str
    seq: int
    """Per-camera count of sampled frames since the camera started."""
    pts: float
    """Stream timestamp, seconds (the camera's clock, not the wall clock)."""
    captured_at: float
    """Wall-clock time (time.time()) when the frame was decoded."""
    captured_mono: float
    """time.monotonic() at decode, for latency and age without clock jumps."""
    width: int
    height: int
    """Size of the camera's picture; detections are reported in these pixels."""
    image: Any
    """The converted pixels, H x W x 3 RGB uint8: a NumPy array, or a CuPy array when an
    NVDEC frame was letterboxed on the GPU. The model input when letterboxed."""
    letterbox: Letterbox | None = None
    """How `image` was letterboxed from the camera's picture; None: full picture."""
    times: StageTimes = field(default_factory=StageTimes)
    picture: Any = None
    """The decoded picture itself (a PyAV frame in host memory, not a copy) while the
    frame is analysed and best-face crops are on, for crops at the camera's resolution;
    None for NVDEC frames (their surfaces belong to the decoder's small pool) and frames
    made elsewhere."""
    timeline_s: float | None = None
    """Seconds on the source's own timeline when that, not the wall clock, is the frame's
    time: recorded video analysed faster than it plays (None: a live camera)."""

    @property
    def clock_s(self) -> float:
        """The frame's time for tracks (when a face was seen, when a track is lost): the
        recording's timeline, or the live camera's arrival time (`captured_mono`)."""
        return self.captured_mono if self.timeline_s is None else self.timeline_s
