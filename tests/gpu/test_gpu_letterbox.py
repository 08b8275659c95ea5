"""The CUDA letterbox kernel: compiled here with NVRTC (no GPU needed); run against its
NumPy twin and fed through DLPack as PyAV feeds it, where a GPU is (marked `gpu`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamd.frames.colour import YuvColour, YuvMatrix
from streamd.gpu.preprocess import KERNEL_NAME, KERNEL_OPTIONS, KERNEL_SOURCE, SELF_TEST_TOLERANCE
from streamd.gpu.resample import letterbox_reference, plan_letterbox
from tests.support.environment import IN_CI, gpu_missing
from tests.support.nvrtc import compile_to_ptx, nvrtc_library
from tests.support.scenes import yuv_picture


def test_kernel_compiles_with_nvrtc_without_fused_multiply_add() -> None:
    library = nvrtc_library()
    if library is None:
        reason = "needs the dev extra's nvidia-cuda-nvrtc-cu12 (NVRTC, no GPU needed)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    for arch in ("compute_75", "compute_86", "compute_90"):  # T4, A10, H100
        ptx = compile_to_ptx(library, KERNEL_SOURCE, [*KERNEL_OPTIONS, f"-arch={arch}"])
        assert f".entry {KERNEL_NAME}(" in ptx
        # The NumPy twin rounds every product and sum; a fused multiply-add would not.
        assert "fma." not in ptx


needs_gpu = pytest.mark.skipif(gpu_missing() is not None, reason=str(gpu_missing()))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("size", [(1920, 1080), (1001, 667), (3840, 2160), (320, 240)])
@pytest.mark.parametrize("colour", [YuvColour(YuvMatrix.bt601, False), YuvColour(YuvMatrix.bt709, True)])
def test_kernel_matches_its_numpy_twin(size: tuple[int, int], colour: YuvColour) -> None:
    import cupy

    from streamd.gpu.preprocess import GpuLetterbox

    width, height = size
    picture = yuv_picture(width, height, colour)
    plan = plan_letterbox(width, height, 640, 640)
    gpu = GpuLetterbox()
    out = cupy.empty((640, 640, 3), cupy.uint8)
    stream = cupy.cuda.Stream(non_blocking=False)
    for y, uv in ((picture.y, picture.uv), (picture.y.astype(np.uint16) << 8, picture.uv.astype(np.uint16) << 8)):
        gpu.yuv_into(cupy.asarray(y), cupy.asarray(uv), plan, colour, out, stream)
        stream.synchronize()
        expected = letterbox_reference(plan, y, uv, colour)
        assert np.abs(out.get().astype(int) - expected.astype(int)).max() <= SELF_TEST_TOLERANCE


class _Format:
    def __init__(self, name: str) -> None:
        self.name = name


class _HardwarePlane:
    """Like PyAV 18's VideoPlane of a CUDA frame: a capsule, but never for a stream."""

    def __init__(self, array: Any) -> None:
        self._array = array

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, *, stream: int | None = None) -> Any:
        if stream is not None:
            raise NotImplementedError("CUDA stream synchronization is not supported.")
        return self._array.__dlpack__()


class _HardwareFrame:
    def __init__(self, y: Any, uv: Any, width: int, height: int, software: str) -> None:
        self.planes = [_HardwarePlane(y), _HardwarePlane(uv)]
        self.width, self.height = width, height
        self.format, self.sw_format = _Format("cuda"), _Format(software)
        self.colorspace, self.color_range = 1, 2  # BT.709, full range


@pytest.mark.gpu
@needs_gpu
def test_dlpack_hand_over_takes_capsules_without_a_stream() -> None:
    import cupy

    from streamd.gpu.preprocess import GpuLetterbox, UnsupportedFrameFormat

    colour = YuvColour(YuvMatrix.bt709, full_range=True)
    picture = yuv_picture(1280, 720, colour)
    frame = _HardwareFrame(cupy.asarray(picture.y), cupy.asarray(picture.uv), 1280, 720, "nv12")
    gpu = GpuLetterbox()
    image, box = gpu.letterbox_frame(frame, 640, 640)
    expected = letterbox_reference(plan_letterbox(1280, 720, 640, 640), picture.y, picture.uv, colour)
    assert box == plan_letterbox(1280, 720, 640, 640).box
    assert np.abs(image.get().astype(int) - expected.astype(int)).max() <= SELF_TEST_TOLERANCE
    planar = _HardwareFrame(cupy.asarray(picture.y), cupy.asarray(picture.uv), 1280, 720, "yuv444p")
    with pytest.raises(UnsupportedFrameFormat, match="yuv444p"):
        gpu.letterbox_frame(planar, 640, 640)
