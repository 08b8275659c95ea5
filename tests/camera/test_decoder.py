"""DecodeSession's per-frame rules, through `run()` on a real clip (no network needed).

Broken timestamps come from a stand-in at PyAV's boundary: the clip's real packets,
decoded by the real decoder, whose frames come out stamped as a broken camera stamps
them, one every 10 ms as from a live stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from streamd.camera.decoder import DecodeSession, open_container
from streamd.camera.errors import CameraError, Reason
from streamd.config.schema import CameraConfig
from streamd.frames.frame import Frame
from streamd.metrics.registry import CameraMetrics, Metrics

Stamp = Callable[[int, int | None], int | None]
"""(index of the decoded frame, its real pts) -> the pts it comes out with."""


class _RestampedPacket:
    def __init__(self, packet: av.Packet, stamp: Callable[[int | None], int | None]) -> None:
        self._packet, self._stamp = packet, stamp
        self.is_keyframe = packet.is_keyframe
        self.pts, self.dts, self.time_base = packet.pts, packet.dts, packet.time_base

    def decode(self) -> list[av.VideoFrame]:
        time.sleep(0.01)
        frames = self._packet.decode()
        for frame in frames:
            frame.pts = self._stamp(frame.pts)
        return list(frames)


class _Restamped:
    """A real container whose frames carry the timestamps `stamp` gives them."""

    def __init__(self, container: Any, stamp: Stamp) -> None:
        self._container, self._stamp, self._decoded = container, stamp, 0
        self.streams = container.streams

    def demux(self, stream: Any) -> Iterator[Any]:
        for packet in self._container.demux(stream):
            yield _RestampedPacket(packet, self._next)

    def _next(self, pts: int | None) -> int | None:
        self._decoded += 1
        return self._stamp(self._decoded - 1, pts)

    def close(self) -> None:
        self._container.close()


def decode(
    video: Path,
    stamp: Stamp | None = None,
    fps: float = 5.0,
    stall_timeout_s: float = 10.0,
    until: int = 10**6,
    keep_picture: bool = False,
) -> tuple[list[Frame], CameraMetrics, CameraError | None]:
    """Run a session on `video` until it ends, fails, or has delivered `until` frames."""
    camera = CameraConfig(id="cam", url=str(video), fps=fps, stall_timeout_s=stall_timeout_s)
    delivered: list[Frame] = []
    stop = threading.Event()
    metrics = Metrics().camera("cam")

    def deliver(frame: Frame) -> None:
        delivered.append(frame)
        if len(delivered) >= until:
            stop.set()

    def opener(url: str, options: dict[str, str], timeout: tuple[float, float], hw: Any) -> Any:
        container = open_container(url, options, timeout, hw)
        return container if stamp is None else _Restamped(container, stamp)

    try:
        DecodeSession(
            camera, deliver, metrics, stop, lambda: None, opener=opener, keep_picture=lambda: keep_picture
        ).run()
    except CameraError as error:
        return delivered, metrics, error
    return delivered, metrics, None


def test_frames_are_sampled_converted_and_numbered(test_video: Path) -> None:
    delivered, metrics, error = decode(test_video, fps=5, until=10)  # 2 s of the 25 fps clip
    assert error is None
    assert [f.seq for f in delivered] == list(range(10))
    assert [f.pts for f in delivered][:3] == pytest.approx([0.0, 0.2, 0.4])
    first = delivered[0]
    assert (first.width, first.height, first.image.shape, first.camera_id) == (640, 360, (360, 640, 3), "cam")
    assert metrics.sampled == 10 and 46 <= metrics.decoded <= 50


def test_a_frame_keeps_its_decoded_picture_only_when_asked(test_video: Path) -> None:
    """Best-face crops need the picture; otherwise a held frame would cost a decoder buffer."""
    without, _, _ = decode(test_video, until=2)
    kept, _, _ = decode(test_video, until=2, keep_picture=True)
    assert [f.picture for f in without] == [None, None]
    assert all(isinstance(f.picture, av.VideoFrame) and f.picture.width == 640 for f in kept)


def test_frames_without_a_timestamp_before_the_first_are_decoded_but_not_sampled(test_video: Path) -> None:
    delivered, metrics, _ = decode(test_video, lambda index, pts: None if index < 3 else pts, until=2)
    assert metrics.decoded >= 4, "the first three were decoded"
    assert delivered[0].pts == pytest.approx(3 / 25), "and only the fourth, the first stamped, was sampled"


def test_frozen_timestamps_end_the_session_after_the_stall_timeout(test_video: Path) -> None:
    start = time.monotonic()
    delivered, _, error = decode(test_video, lambda _index, _pts: 100, stall_timeout_s=0.3)
    assert error is not None and error.reason is Reason.frozen_timestamps
    assert time.monotonic() - start >= 0.3
    assert len(delivered) == 1, "a frozen clock samples its first frame and no other"


def test_advancing_timestamps_never_count_as_frozen(test_video: Path) -> None:
    # 0.2 s of stall timeout against a clip of six: it plays through to its end.
    delivered, metrics, error = decode(test_video, lambda _index, pts: pts, stall_timeout_s=0.2)
    assert error is None and metrics.decoded == 150 and len(delivered) == 30
