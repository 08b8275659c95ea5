"""Letterbox on the GPU: NVDEC frames (NV12 or P010) -> the model's uint8 RGB input.

One CUDA kernel does what the CPU path does with libswscale: YUV to RGB, resize keeping
the aspect ratio (area averaging when shrinking, bilinear when growing), centre, pad
with 114. It does no geometry of its own: it reads the tap tables of
`streamd.gpu.resample`, whose NumPy twin `letterbox_reference` performs the same
float32 operations in the same order (compiled with --fmad=false so no multiply-add is
fused). The twin is tested against libswscale on the CPU; the kernel is tested against
the twin when a `GpuLetterbox` is created, so a broken kernel or a host without NVRTC
is found at start, where the detector falls back to host letterboxing.

Hand-over from PyAV (read against PyAV 18.1's `VideoPlane.__dlpack__`):
- PyAV refuses a `stream` argument for hardware frames, and `cupy.from_dlpack(obj)`
  always passes one for CUDA data. A capsule taken without a stream is accepted by
  CuPy as it is, so that is what is handed over.
- With `is_hw_owned`, FFmpeg copies the decoded surface into the frame on the legacy
  default stream of the primary CUDA context (PyAV sets `primary_ctx=1`), which is
  CuPy's context too. The kernel runs on a per-thread *blocking* stream, which CUDA
  orders after work on the legacy default stream, and is waited for before the
  frame goes back to FFmpeg's pool.

Formats: NVDEC hands back NV12 for 8-bit video and P010/P016 for more; DLPack export
exists for exactly those. Anything else (4:4:4, say) raises `UnsupportedFrameFormat`,
and that camera decodes on the CPU path instead.

Colour: matrix and range come from `streamd.frames.colour`, the CPU path's own decision.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from streamd.frames.colour import YuvColour, YuvMatrix, colour_of
from streamd.frames.letterbox import Letterbox
from streamd.gpu.resample import LetterboxPlan, letterbox_reference, plan_letterbox
from streamd.model.canonical import PAD_VALUE

SUPPORTED_FORMATS = {"nv12": 1, "p010le": 2, "p016le": 2}
"""NVDEC software formats the kernel reads, with their bytes per sample."""

KERNEL_SOURCE = r"""
__device__ __forceinline__ float sample(const unsigned char* plane, int pitch, int wide, int row, int column)
{
    const unsigned char* line = plane + (size_t)row * pitch;
    return wide ? ((const unsigned short*)line)[column] / 256.0f : (float)line[column];
}

// One plane (or one of the interleaved chroma components: step 2, offset 0 or 1),
// resampled at output (x, y) with the plan's taps: for each vertical tap a horizontal
// weighted sum, then accumulated. The NumPy twin does the same in the same order.
__device__ float resample(const unsigned char* plane, int pitch, int wide, int step, int offset,
                          int width, int height,
                          const int* x0, const float* xw, int xk, const int* y0, const float* yw, int yk,
                          int x, int y)
{
    float total = 0.0f;
    for (int ty = 0; ty < yk; ++ty) {
        int row = min(y0[y] + ty, height - 1);
        float horizontal = 0.0f;
        for (int tx = 0; tx < xk; ++tx) {
            int column = min(x0[x] + tx, width - 1);
            horizontal = horizontal + xw[x * xk + tx] * sample(plane, pitch, wide, row, column * step + offset);
        }
        total = total + yw[y * yk + ty] * horizontal;
    }
    return total;
}

extern "C" __global__
void yuv_letterbox(const unsigned char* luma, int luma_pitch, const unsigned char* chroma, int chroma_pitch,
                   int wide, int luma_w, int luma_h, int chroma_w, int chroma_h,
                   const int* lx0, const float* lxw, int lxk, const int* ly0, const float* lyw, int lyk,
                   const int* cx0, const float* cxw, int cxk, const int* cy0, const float* cyw, int cyk,
                   unsigned char* out, int out_w, int out_h, int pad_x, int pad_y, int new_w, int new_h,
                   unsigned char pad, float y_scale, float y_offset, float rv, float gu, float gv, float bu)
{
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    unsigned char* px = out + ((size_t)oy * out_w + ox) * 3;
    int x = ox - pad_x, y = oy - pad_y;
    if (x < 0 || y < 0 || x >= new_w || y >= new_h) { px[0] = px[1] = px[2] = pad; return; }
    float l = resample(luma, luma_pitch, wide, 1, 0, luma_w, luma_h, lx0, lxw, lxk, ly0, lyw, lyk, x, y);
    float u = resample(chroma, chroma_pitch, wide, 2, 0, chroma_w, chroma_h, cx0, cxw, cxk, cy0, cyw, cyk, x, y)
              - 128.0f;
    float v = resample(chroma, chroma_pitch, wide, 2, 1, chroma_w, chroma_h, cx0, cxw, cxk, cy0, cyw, cyk, x, y)
              - 128.0f;
    float level = y_scale * (l - y_offset);
    float r = level + rv * v;
    float g = level + gu * u + gv * v;
    float b = level + bu * u;
    px[0] = (unsigned char)fminf(fmaxf(r + 0.5f, 0.0f), 255.0f);
    px[1] = (unsigned char)fminf(fmaxf(g + 0.5f, 0.0f), 255.0f);
    px[2] = (unsigned char)fminf(fmaxf(b + 0.5f, 0.0f), 255.0f);
}
"""

KERNEL_NAME = "yuv_letterbox"
KERNEL_OPTIONS = ("--fmad=false",)
"""No fused multiply-add: the kernel's float32 results then match the NumPy twin's."""

# The self-test: odd, shrinking and growing geometry, both sample widths, each range.
_SELF_TEST_SIZES = ((150, 98, 64, 64), (40, 30, 64, 64))
SELF_TEST_TOLERANCE = 1
"""Largest difference in levels allowed between the kernel and its NumPy twin."""


class UnsupportedFrameFormat(ValueError):
    """The GPU letterbox cannot read this hardware frame's layout."""


class GpuLetterboxError(RuntimeError):
    """The kernel could not be compiled or gives wrong results on this GPU."""


class _DevicePlan:
    """A LetterboxPlan's tap tables in device memory."""

    def __init__(self, cupy: Any, plan: LetterboxPlan) -> None:
        self.plan = plan
        self.tables = []
        for taps in (plan.luma_x, plan.luma_y, plan.chroma_x, plan.chroma_y):
            self.tables += [cupy.asarray(taps.start), cupy.asarray(taps.weights), np.int32(taps.count)]


class GpuLetterbox:
    """Compiled and self-tested once per process; then letterboxes NVDEC frames in any thread."""

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        try:
            self._kernel = cupy.RawKernel(KERNEL_SOURCE, KERNEL_NAME, options=KERNEL_OPTIONS)
            self._kernel.compile()  # NVRTC: fails here, not at the first frame, on a driver-only host
        except Exception as error:
            raise GpuLetterboxError(f"cannot compile the letterbox kernel (is NVRTC installed?): {error}") from error
        self._plans: dict[tuple[int, ...], _DevicePlan] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.self_test()

    def self_test(self) -> float:
        """Kernel against its NumPy twin on synthetic frames; returns the largest difference."""
        cupy = self._cupy
        rng = np.random.default_rng(7)
        worst = 0
        for width, height, out_w, out_h in _SELF_TEST_SIZES:
            for wide in (False, True):
                for colour in (YuvColour(YuvMatrix.bt601, False), YuvColour(YuvMatrix.bt709, True)):
                    y: np.ndarray = rng.integers(0, 256, (height, width), dtype=np.uint16)
                    uv: np.ndarray = rng.integers(0, 256, ((height + 1) // 2, (width + 1) // 2, 2), dtype=np.uint16)
                    # 16-bit (P010): the 8-bit value in the high bits; 8-bit (NV12) as is.
                    y, uv = (y << 8, uv << 8) if wide else (y.astype(np.uint8), uv.astype(np.uint8))
                    plan = plan_letterbox(width, height, out_w, out_h, uv.shape[1], uv.shape[0])
                    out = cupy.empty((out_h, out_w, 3), cupy.uint8)
                    stream = self._stream()
                    self.yuv_into(cupy.asarray(y), cupy.asarray(uv), plan, colour, out, stream)
                    stream.synchronize()
                    expected = letterbox_reference(plan, y, uv, colour)
                    worst = max(worst, int(np.abs(out.get().astype(int) - expected.astype(int)).max()))
        if worst > SELF_TEST_TOLERANCE:
            raise GpuLetterboxError(f"kernel self-test: {worst} levels from the reference (at most 1 allowed)")
        return worst

    def device_plan(self, plan: LetterboxPlan) -> _DevicePlan:
        source = (plan.luma_width, plan.luma_height, plan.chroma_width, plan.chroma_height)
        key = (*source, plan.out_width, plan.out_height)
        with self._lock:
            found = self._plans.get(key)
            if found is None:
                found = self._plans[key] = _DevicePlan(self._cupy, plan)
        return found

    def yuv_into(self, y: Any, uv: Any, plan: LetterboxPlan, colour: YuvColour, out: Any, stream: Any) -> None:
        """`y` [H, W] and `uv` [H/2, W/2, 2] device arrays (uint8 or uint16, pitched is fine) -> `out` [h, w, 3]."""
        if not out.flags.c_contiguous or out.shape != (plan.out_height, plan.out_width, 3):
            raise ValueError(f"out must be a C-contiguous [{plan.out_height}, {plan.out_width}, 3] uint8 array")
        wide = y.dtype.itemsize == 2
        tables = self.device_plan(plan).tables
        i32, f32 = np.int32, np.float32
        y_scale, y_offset, rv, gu, gv, bu = (f32(c) for c in colour.rgb_coefficients())
        box = plan.box
        args = (
            y, i32(y.strides[0]), uv, i32(uv.strides[0]), i32(wide),
            i32(plan.luma_width), i32(plan.luma_height), i32(plan.chroma_width), i32(plan.chroma_height),
            *tables,
            out, i32(plan.out_width), i32(plan.out_height), i32(box.pad_x), i32(box.pad_y),
            i32(plan.new_width), i32(plan.new_height), np.uint8(PAD_VALUE),
            y_scale, y_offset, rv, gu, gv, bu,
        )  # fmt: skip
        block = (16, 16, 1)
        grid = ((plan.out_width + 15) // 16, (plan.out_height + 15) // 16, 1)
        self._kernel(grid, block, args, stream=stream)

    def letterbox_frame(self, frame: Any, width: int, height: int) -> tuple[Any, Letterbox]:
        """An NVDEC frame (`is_hw_owned`, on the GPU) -> its letterboxed [height, width, 3] device array.

        Runs in the camera's decode thread and waits for the kernel, so the surface can
        go back to the decoder as soon as this returns; only the small letterboxed
        image waits in the slot.
        """
        software = frame.sw_format.name if frame.sw_format is not None else frame.format.name
        if software not in SUPPORTED_FORMATS:
            raise UnsupportedFrameFormat(
                f"NVDEC gives {software} frames; the GPU letterbox reads {', '.join(SUPPORTED_FORMATS)}"
            )
        cupy = self._cupy
        # Capsules taken without a stream: PyAV raises for a stream on hardware frames.
        y = cupy.from_dlpack(frame.planes[0].__dlpack__())
        uv = cupy.from_dlpack(frame.planes[1].__dlpack__())  # [H/2, W/2, 2]
        plan = plan_letterbox(frame.width, frame.height, width, height, uv.shape[1], uv.shape[0])
        out = cupy.empty((height, width, 3), dtype=cupy.uint8)
        stream = self._stream()
        self.yuv_into(y, uv, plan, colour_of(frame), out, stream)
        stream.synchronize()
        return out, plan.box

    def _stream(self) -> Any:
        # Blocking (not non_blocking): ordered after FFmpeg's copy on the legacy default stream.
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self._cupy.cuda.Stream(non_blocking=False)
        return stream


def copy_image_into(target: Any, image: Any, stream: Any) -> None:
    """Device to device, `image` into `target` (one row of an engine input buffer) on `stream`.

    A plain memcpy: CuPy's `target[...] = image` would launch an elementwise kernel,
    compiled by NVRTC at its first call.
    """
    if image.shape != target.shape or image.dtype != target.dtype or not image.flags.c_contiguous:
        raise ValueError(f"a GPU image of shape {image.shape} {image.dtype} cannot fill {target.shape} {target.dtype}")
    target.data.copy_from_device_async(image.data, image.nbytes, stream)
