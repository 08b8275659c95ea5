"""Choose which decoded frames to analyse, by stream timestamp.

A 25 fps camera analysed at 5 fps keeps every fifth frame, but cameras drop frames,
vary their rate and restart their clocks, so the choice is made on timestamps, not on
counts: a frame is taken when its timestamp reaches the next due time, and the due time
advances by exactly one interval so the long-run rate is the configured one.
"""

from __future__ import annotations

# A frame this close before its due time is taken: timestamps carry rounding (90 kHz
# RTP clocks, millisecond containers), and waiting for the next frame would be worse.
_EARLY_TOLERANCE_S = 0.005
# A jump back by more than this is a new clock (camera restart, file loop), not jitter.
_BACKWARD_JUMP_S = 1.0


class FrameSampler:
    def __init__(self, fps: float) -> None:
        self._next_due: float | None = None
        self._last: float | None = None
        self.set_fps(fps)

    def set_fps(self, fps: float) -> None:
        """Sample at `fps` from the next due frame on (overload lowers and restores it)."""
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.interval = 1.0 / fps

    def reset(self) -> None:
        self._next_due = None
        self._last = None

    def take(self, timestamp: float) -> bool:
        """Whether the frame stamped `timestamp` (seconds) is to be analysed."""
        if self._last is not None and timestamp < self._last - _BACKWARD_JUMP_S:
            self.reset()
        self._last = timestamp
        if self._next_due is None:
            self._next_due = timestamp + self.interval
            return True
        if timestamp + _EARLY_TOLERANCE_S < self._next_due:
            return False
        self._next_due += self.interval
        if self._next_due <= timestamp:
            # Far behind (a gap in the stream): restart the grid here instead of
            # taking a burst of frames to catch up.
            self._next_due = timestamp + self.interval
        return True
