"""`decode_frames`: decode every frame, or only the keyframes when they are enough.

A camera analysed once a second whose stream has a keyframe every second needs nothing
but its keyframes: every other frame would be decoded only to be thrown away by the
sampler, and decoding is most of the CPU a camera costs. With `keyframes`, FFmpeg's
decoder is told to skip the rest (`skip_frame = NONKEY`: the packets are still read, and
parsed, but not decoded). `auto` does that only while the keyframes come at least as
often as the camera is analysed, judged by the intervals between the last few keyframe
packets: a camera that stretches its GOP (smart codecs do, in a quiet scene) goes back
to decoding every frame at its next keyframe.

The choice changes only at a keyframe: turning skipping off in the middle of a GOP
would hand the decoder frames whose references it never decoded.
"""

from __future__ import annotations

from collections import deque

from streamd.config.schema import DecodeFrames

# The sampler takes a frame up to 5 ms before it is due; a keyframe interval within
# that of the analysis interval still delivers every analysed frame.
_TOLERANCE_S = 0.005
# Keyframe intervals judged: the longest of the last few (a GOP that varies is judged by
# its longest stretch, so a single short one does not switch skipping on).
_INTERVALS = 3


class KeyframeGate:
    def __init__(self, mode: DecodeFrames) -> None:
        self.mode = mode
        self.keyframes_only = mode is DecodeFrames.keyframes
        self._last_keyframe: float | None = None
        self._intervals: deque[float] = deque(maxlen=_INTERVALS)

    @property
    def keyframe_interval(self) -> float | None:
        """Seconds between keyframes (the longest of the last few), None until two were seen."""
        return max(self._intervals) if self._intervals else None

    def keyframe(self, time_s: float | None, analysis_interval_s: float) -> bool:
        """A keyframe packet stamped `time_s` arrives: whether to decode keyframes only from it on."""
        if time_s is not None:
            if self._last_keyframe is not None and time_s > self._last_keyframe:
                self._intervals.append(time_s - self._last_keyframe)
            elif self._last_keyframe is not None:
                self._intervals.clear()  # the clock went back (a new stream): judge afresh
            self._last_keyframe = time_s
        if self.mode is DecodeFrames.auto:
            interval = self.keyframe_interval
            self.keyframes_only = (
                len(self._intervals) == _INTERVALS
                and interval is not None
                and interval <= analysis_interval_s + _TOLERANCE_S
            )
        return self.keyframes_only
