"""One recorded input decoded in its own thread, as fast as analysis takes its frames.

A camera's slot replaces a frame analysis has not taken (live video must not queue);
a recording must lose nothing, so the reader waits for its slot to be emptied before it
puts the next frame (`wait_empty`): the engine sets the pace, and memory stays one
frame per input in flight. Frames are sampled on the video's own timestamps, as cameras
are, or all taken (`fps` None), and carry their timestamp as the frame's clock, so
tracks see the recording's time, not how fast it was read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import av.error

from streamd.base.errors import InputError
from streamd.camera.sampler import FrameSampler
from streamd.camera.slot import LatestFrameSlot
from streamd.frames.frame import Frame, StageTimes
from streamd.frames.letterbox import Letterbox, load_image
from streamd.recorded.inputs import Input, Kind, duration_s

log = logging.getLogger(__name__)

Converter = Callable[[av.VideoFrame], tuple[Any, Letterbox | None]]
# Undecodable packets in a row after which a file is broken, not glitching (as cameras).
_MAX_CONSECUTIVE_DECODE_ERRORS = 100
# A video that ends this much (plus two frames) before the duration its header declares
# was cut short: a copy interrupted, a recorder that crashed.
_TRUNCATED_S = 0.5


@dataclass
class ReadOutcome:
    frames: int = 0
    """Frames handed to analysis."""
    decode_errors: int = 0
    """Packets that could not be decoded and were skipped."""
    error: str | None = None
    """Why reading ended early; None: to its end, or stopped."""
    stopped: bool = False


@dataclass(frozen=True)
class ReadSettings:
    fps: float | None
    """Analysis rate on the video's timestamps; None: every frame."""
    threads: int
    """Decoder threads for one file (the parallelism is mostly across files)."""
    convert: Converter
    keep_picture: bool
    """Hand the decoded picture on with the frame (for best-face crops)."""


def read(source: Input, slot: LatestFrameSlot[Frame], settings: ReadSettings, stop: threading.Event) -> ReadOutcome:
    """Decode `source` into `slot` until its end, an error or `stop` (blocking)."""
    outcome = ReadOutcome()
    try:
        if source.kind is Kind.image:
            _hand_on(source, load_image(str(source.path)), 0.0, slot, settings, stop, outcome)
        else:
            _read_video(source, slot, settings, stop, outcome)
    except Exception as error:
        if not isinstance(error, (av.error.FFmpegError, OSError, EOFError, ValueError)):
            # Not the file's usual ways of being bad: the traceback is for a bug report,
            # and the other inputs go on all the same.
            log.exception("%s: reading failed", source.name)
        what = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
        outcome.error = f"{what} (after {outcome.frames} frame(s))" if outcome.frames else what
    return outcome


def _read_video(
    source: Input, slot: LatestFrameSlot[Frame], settings: ReadSettings, stop: threading.Event, outcome: ReadOutcome
) -> None:
    sampler = FrameSampler(settings.fps) if settings.fps is not None else None
    with av.open(str(source.path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = settings.threads
        stream.codec_context.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        declared = duration_s(container, stream)
        first: float | None = None
        last = 0.0
        consecutive_errors = decoded = 0
        for packet in container.demux(stream):
            if stop.is_set():
                outcome.stopped = True
                return
            try:
                frames = packet.decode()
                consecutive_errors = 0
            except av.error.InvalidDataError as error:
                outcome.decode_errors += 1
                consecutive_errors += 1
                if consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise InputError(f"{consecutive_errors} packets in a row could not be decoded: {error}") from error
                continue
            for frame in frames:
                # No timestamp (some raw streams): where the frame rate puts it.
                pts = frame.time if frame.time is not None else decoded / rate
                decoded += 1
                first = pts if first is None else first
                last = pts
                if sampler is not None and not sampler.take(pts):
                    continue
                if not _hand_on(source, frame, pts, slot, settings, stop, outcome):
                    return
        played = last - first + 1 / rate if first is not None else 0.0
        if declared is not None and played + 2 / rate + _TRUNCATED_S < declared:
            raise InputError(f"truncated: the video ends after {played:.2f}s of the {declared:.2f}s it declares")


def _hand_on(
    source: Input,
    picture: av.VideoFrame,
    pts: float,
    slot: LatestFrameSlot[Frame],
    settings: ReadSettings,
    stop: threading.Event,
    outcome: ReadOutcome,
) -> bool:
    """Convert and put one frame, waiting for room; False when stopped meanwhile."""
    started = time.monotonic()
    image, box = settings.convert(picture)
    converted_s = time.monotonic() - started
    if not slot.wait_empty(stop):
        outcome.stopped = True
        return False
    # Stamped once in the slot: its age (the batcher's `max_age_ms`) starts there.
    ready = time.monotonic()
    frame = Frame(
        camera_id=source.name,
        seq=outcome.frames,
        pts=pts,
        captured_at=time.time(),
        captured_mono=ready,
        width=picture.width,
        height=picture.height,
        image=image,
        letterbox=box,
        times=StageTimes(decode_s=converted_s, ready_mono=ready),
        picture=picture if settings.keep_picture else None,
        timeline_s=pts,
    )
    slot.put(frame)
    outcome.frames += 1
    return True
