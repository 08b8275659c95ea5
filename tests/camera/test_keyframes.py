"""decode_frames: the keyframe gate's rule, and real H.264 decoded whole or keyframes only."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from devtools.testing.decode import decode_as_live
from streamd.camera.keyframes import KeyframeGate
from streamd.camera.state import CameraRun
from streamd.config.schema import CameraConfig, DecodeFrames
from streamd.frames.frame import Frame
from streamd.frames.letterbox import letterbox


def test_auto_decodes_keyframes_only_once_three_intervals_are_short_enough() -> None:
    gate = KeyframeGate(DecodeFrames.auto)
    decisions = [gate.keyframe(float(second), analysis_interval_s=1.0) for second in range(5)]
    assert decisions == [False, False, False, True, True]
    assert gate.keyframe_interval == pytest.approx(1.0)


def test_auto_keeps_every_frame_when_keyframes_are_rarer_than_the_analysis() -> None:
    gate = KeyframeGate(DecodeFrames.auto)
    assert not any(gate.keyframe(2.0 * n, analysis_interval_s=1.0) for n in range(10))
    assert gate.keyframe_interval == pytest.approx(2.0)


def test_auto_goes_back_to_every_frame_when_the_gop_stretches() -> None:
    gate = KeyframeGate(DecodeFrames.auto)
    for second in range(5):
        gate.keyframe(float(second), 1.0)
    assert gate.keyframes_only
    assert not gate.keyframe(8.0, 1.0)  # a quiet scene: the camera waited 4 s for a keyframe
    assert not gate.keyframe(9.0, 1.0)  # still among the last three intervals
    assert not gate.keyframe(10.0, 1.0)
    assert gate.keyframe(11.0, 1.0)


def test_a_clock_that_goes_back_is_judged_afresh_and_keyframes_mode_never_changes() -> None:
    gate = KeyframeGate(DecodeFrames.auto)
    for second in range(5):
        gate.keyframe(float(second), 1.0)
    assert not gate.keyframe(0.0, 1.0)  # a new stream (a camera restart): no intervals yet
    forced = KeyframeGate(DecodeFrames.keyframes)
    assert forced.keyframes_only
    assert all(forced.keyframe(10.0 * n, 1.0) for n in range(4))
    assert not any(KeyframeGate(DecodeFrames.all).keyframe(float(n), 1.0) for n in range(6))


def keyframe_times(video: Path) -> list[float]:
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        return [
            float(packet.pts * packet.time_base)
            for packet in container.demux(stream)
            if packet.is_keyframe and packet.pts is not None
        ]


def decode(video: Path, mode: DecodeFrames, fps: float) -> tuple[list[Frame], int, CameraRun, list[str]]:
    camera = CameraConfig(id="cam", url="rtsp://127.0.0.1/cam", fps=fps, decode="cpu", decode_frames=mode)
    return decode_as_live(video, camera, lambda frame: letterbox(frame, 320, 320))


def test_keyframes_mode_decodes_only_keyframes_and_they_are_the_same_pictures(test_video: Path) -> None:
    keyframes = keyframe_times(test_video)
    assert len(keyframes) >= 6  # a 6 s clip with a 1 s GOP
    every, decoded_all, _, _ = decode(test_video, DecodeFrames.all, fps=1.0)
    only, decoded_keyframes, run, _ = decode(test_video, DecodeFrames.keyframes, fps=1.0)
    assert decoded_all == 150
    assert decoded_keyframes == len(keyframes)
    assert run.keyframes_only
    # At 1 fps the sampler takes one frame a second: the keyframes, decoded either way;
    # the pictures (so the faces found in them) are the same bytes.
    assert [frame.pts for frame in only] == [frame.pts for frame in every]
    for ours, theirs in zip(only, every, strict=True):
        assert np.array_equal(ours.image, theirs.image), f"frame at {ours.pts}s differs"


def test_auto_switches_to_keyframes_when_they_suffice_and_not_when_they_do_not(test_video: Path) -> None:
    total_keyframes = len(keyframe_times(test_video))
    sampled_all, decoded_all, _, _ = decode(test_video, DecodeFrames.all, fps=1.0)
    sampled, decoded, run, said = decode(test_video, DecodeFrames.auto, fps=1.0)
    # Whole GOPs until three keyframe intervals were seen, then keyframes only.
    assert run.keyframes_only and decoded < decoded_all
    assert decoded == 3 * 25 + (total_keyframes - 3)
    assert [frame.pts for frame in sampled] == [frame.pts for frame in sampled_all]
    assert any("decoding keyframes only (keyframes every 1.00s, analysed every 1.00s)" in line for line in said)
    # Analysed at 5 fps, keyframes once a second are not enough: every frame is decoded.
    _, decoded_at_5, run_at_5, _ = decode(test_video, DecodeFrames.auto, fps=5.0)
    assert decoded_at_5 == 150 and not run_at_5.keyframes_only
