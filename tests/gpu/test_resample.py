"""The GPU letterbox's arithmetic (its NumPy twin) against the CPU letterbox (libswscale).

No GPU needed: `letterbox_reference` performs the kernel's exact float32 operations on
the kernel's own tap tables, and the kernel is held to it on a GPU
(`test_gpu_letterbox.py`) and at every start (`GpuLetterbox` self-test).
"""

from __future__ import annotations

import numpy as np
import pytest

from streamd.frames.colour import YuvColour, YuvMatrix, colour_of
from streamd.frames.letterbox import letterbox
from streamd.gpu.resample import axis_taps, letterbox_reference, plan_letterbox
from tests.support.scenes import yuv_picture

COLOURS = [
    YuvColour(YuvMatrix.bt601, full_range=False),
    YuvColour(YuvMatrix.bt709, full_range=False),
    YuvColour(YuvMatrix.bt601, full_range=True),
    YuvColour(YuvMatrix.bt709, full_range=True),
]
SIZES = [
    (1920, 1080),  # 1080p: 3x down
    (1024, 768),  # 4:3
    (1001, 667),  # odd sizes
    (3840, 2160),  # 6x down
    (2592, 1944),  # 5 MP 4:3 camera, 4x down
    (320, 240),  # growing: bilinear
]


def _pads_are_exact(image: np.ndarray, width: int, height: int) -> None:
    plan = plan_letterbox(width, height, 640, 640)
    box = plan.box
    inside = np.zeros(image.shape[:2], bool)
    inside[box.pad_y : box.pad_y + plan.new_height, box.pad_x : box.pad_x + plan.new_width] = True
    assert (image[~inside] == 114).all()


@pytest.mark.parametrize("colour", COLOURS, ids=lambda c: f"{c.matrix.name}-{'full' if c.full_range else 'limited'}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_arithmetic_matches_the_cpu_letterbox(size: tuple[int, int], colour: YuvColour) -> None:
    width, height = size
    picture = yuv_picture(width, height, colour)
    assert colour_of(picture.frame) == colour
    cpu, box = letterbox(picture.frame, 640, 640)
    plan = plan_letterbox(width, height, 640, 640)
    assert plan.box == box
    reference = letterbox_reference(plan, picture.y, picture.uv, colour)
    difference = np.abs(reference.astype(int) - cpu.astype(int))
    assert difference.mean() <= 1.5, f"mean {difference.mean():.2f} levels"
    _pads_are_exact(reference, width, height)
    _pads_are_exact(cpu, width, height)


def test_nv12_frames_on_the_cpu_path_match_too() -> None:
    # NVDEC frames copied back to the host arrive as NV12, not planar 4:2:0.
    colour = YuvColour(YuvMatrix.bt709, full_range=True)
    picture = yuv_picture(1920, 1080, colour, pixel_format="nv12")
    cpu, _ = letterbox(picture.frame, 640, 640)
    reference = letterbox_reference(plan_letterbox(1920, 1080, 640, 640), picture.y, picture.uv, colour)
    assert np.abs(reference.astype(int) - cpu.astype(int)).mean() <= 1.5


def test_point_sampling_would_fail_the_same_comparison() -> None:
    # The test above can fail: bilinear taps at a 3x shrink (what the kernel did
    # before) alias the fine detail and land far from the CPU's area average.
    colour = YuvColour()
    picture = yuv_picture(1920, 1080, colour)
    cpu, _ = letterbox(picture.frame, 640, 640)
    plan = plan_letterbox(1920, 1080, 640, 640)
    point = {
        name: axis_taps(length, outputs, 0.999)  # <= 1: the bilinear branch
        for name, length, outputs in (
            ("luma_x", 1920, 640),
            ("luma_y", 1080, 360),
            ("chroma_x", 960, 640),
            ("chroma_y", 540, 360),
        )
    }
    point_sampled = type(plan)(**{**plan.__dict__, **point})
    aliased = letterbox_reference(point_sampled, picture.y, picture.uv, colour)
    assert np.abs(aliased.astype(int) - cpu.astype(int)).mean() > 3.0


def test_full_range_is_not_converted_as_limited_range() -> None:
    # The bug this replaces: full-range camera video converted as limited range.
    full = yuv_picture(1280, 720, YuvColour(YuvMatrix.bt601, full_range=True))
    cpu, _ = letterbox(full.frame, 640, 640)
    plan = plan_letterbox(1280, 720, 640, 640)
    as_limited = letterbox_reference(plan, full.y, full.uv, YuvColour(YuvMatrix.bt601, full_range=False))
    rows = slice(plan.box.pad_y, plan.box.pad_y + plan.new_height)
    difference = np.abs(as_limited[rows].astype(int) - cpu[rows].astype(int)).mean()
    assert difference > 5.0, f"mean {difference:.2f} levels"


def test_ten_bit_planes_give_the_eight_bit_result() -> None:
    # P010/P016: the sample in the high bits of a 16-bit word.
    colour = YuvColour(YuvMatrix.bt709)
    picture = yuv_picture(1280, 720, colour)
    plan = plan_letterbox(1280, 720, 640, 640)
    eight = letterbox_reference(plan, picture.y, picture.uv, colour)
    sixteen = letterbox_reference(plan, picture.y.astype(np.uint16) << 8, picture.uv.astype(np.uint16) << 8, colour)
    assert np.array_equal(eight, sixteen)


@pytest.mark.parametrize(("length", "outputs"), [(1920, 640), (1080, 360), (1001, 640), (7, 3), (240, 480), (5, 5)])
def test_taps_cover_the_source_once(length: int, outputs: int) -> None:
    taps = axis_taps(length, outputs, length / outputs)
    assert np.allclose(taps.weights.sum(axis=1), 1.0, atol=1e-6)
    assert (taps.weights >= 0).all() and taps.start.min() >= 0
    used = taps.start[:, None] + np.arange(taps.count)[None, :]
    assert used[taps.weights > 0].max() <= length - 1
    if length > outputs:  # area: every source sample contributes, in total, its share
        contribution = np.zeros(length)
        np.add.at(contribution, used[taps.weights > 0], taps.weights[taps.weights > 0])
        assert np.allclose(contribution, outputs / length, atol=1e-5)


def test_colour_follows_the_frame_tags() -> None:
    import av

    frame = av.VideoFrame(64, 48, "yuv420p")
    assert colour_of(frame) == YuvColour(YuvMatrix.bt601, full_range=False)  # unspecified
    frame.colorspace = 1
    assert colour_of(frame).matrix is YuvMatrix.bt709
    frame.colorspace, frame.color_range = 9, 2
    assert colour_of(frame) == YuvColour(YuvMatrix.bt2020, full_range=True)
    assert colour_of(av.VideoFrame(64, 48, "yuvj420p")).full_range
    # Coefficients reproduce the standard: limited white and black map to 255 and 0.
    y_scale, y_offset, *_ = YuvColour().rgb_coefficients()
    assert round(y_scale * (235 - y_offset)) == 255 and y_scale * (16 - y_offset) == 0
