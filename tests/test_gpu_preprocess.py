"""GPU letterbox against the CPU one. Needs CuPy and an NVIDIA GPU; skips cleanly without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamd.gpu.preprocess import COEFFICIENTS, matrix_for
from streamd.preprocess import letterbox, letterbox_geometry, load_image
from tests.conftest import gpu_missing


def test_colour_matrix_follows_the_stream_like_libswscale() -> None:
    assert matrix_for(None) == "bt601" and matrix_for("ITU709") == "bt709" and matrix_for("SMPTE170M") == "bt601"
    # Coefficients reproduce the standard: white (235, 128, 128) -> 255 and black (16) -> 0.
    for yc, *_ in COEFFICIENTS.values():
        assert round(yc * (235 - 16)) == 255


@pytest.mark.gpu
@pytest.mark.skipif(gpu_missing() is not None, reason=str(gpu_missing()))
def test_gpu_letterbox_matches_the_cpu_within_tolerance(assets_dir: Path) -> None:
    import cupy

    from streamd.gpu.preprocess import GpuLetterbox

    frame = load_image(str(assets_dir / "images" / "two_people.jpg")).reformat(width=1280, height=720, format="nv12")
    cpu, box = letterbox(frame, 640, 640)
    nv12 = frame.to_ndarray()  # [H * 3/2, W]: Y rows, then interleaved UV rows
    y = cupy.asarray(nv12[: frame.height])
    uv = cupy.asarray(nv12[frame.height :])
    out = cupy.empty((640, 640, 3), dtype=cupy.uint8)
    GpuLetterbox().nv12_into(y, uv, box, out)
    gpu = out.get()
    _, new_h, _ = letterbox_geometry(1280, 720, 640, 640)
    assert (gpu[: box.pad_y] == 114).all() and (gpu[box.pad_y + new_h :] == 114).all()
    difference = np.abs(gpu.astype(int) - cpu.astype(int))
    assert difference.mean() < 4.0, difference.mean()
