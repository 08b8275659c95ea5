"""A region of a decoded picture converts as libswscale converts the whole picture."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from streamd.frames.colour import colour_of
from streamd.frames.region import picture_region


@pytest.mark.parametrize("pixel_format", ["yuv420p", "yuvj420p", "yuv444p"])
def test_a_region_matches_the_whole_picture_converted(test_video: Path, pixel_format: str) -> None:
    with av.open(str(test_video)) as container:
        decoded = next(container.decode(video=0))
    frame = decoded.reformat(format=pixel_format)
    colour = colour_of(frame)
    whole = frame.reformat(
        format="rgb24", src_colorspace=colour.matrix.swscale_colorspace, src_color_range=colour.swscale_range
    ).to_ndarray()
    pixels, left, top = picture_region(frame, 101, 51, 301, 211)
    assert (left, top) == (100, 50) and pixels.shape == (161, 201, 3)
    difference = np.abs(pixels.astype(int) - whole[top : top + 161, left : left + 201].astype(int))
    # Chroma taken nearest rather than interpolated: a level or two at colour edges.
    assert difference.mean() < 1.5 and difference.max() <= 12


def test_a_region_beyond_the_picture_is_clipped(test_video: Path) -> None:
    with av.open(str(test_video)) as container:
        frame = next(container.decode(video=0))
    pixels, left, top = picture_region(frame, -20, -10, 40, 30)
    assert (left, top) == (0, 0) and pixels.shape == (30, 40, 3)
    empty, _, _ = picture_region(frame, frame.width + 5, 0, frame.width + 50, 10)
    assert empty.size == 0
