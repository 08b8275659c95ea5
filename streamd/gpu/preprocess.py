"""Letterbox on the GPU: NV12 planes from NVDEC -> the model's uint8 RGB input, in place.

One CUDA kernel does what the CPU path does with libswscale: YUV to RGB, resize keeping
the aspect ratio, centre, pad with 114, writing straight into a [H, W, 3] uint8 slice
of the engine's input buffer, so a decoded frame never crosses PCIe.

Sampling is bilinear. libswscale downscales with area averaging on the CPU path, so the
two differ on fine detail when shrinking (1080p -> 640); `make gpu-check` reports the
difference (mean absolute difference in levels) and the detections on both.

Colour: limited-range YUV, BT.601 or BT.709 coefficients, chosen from the frame's
colour space the way libswscale chooses (unspecified -> BT.601).

Not run on a GPU yet (no GPU in the session that wrote it): see README "GPU status".
"""

from __future__ import annotations

from typing import Any

from streamd.model.canonical import PAD_VALUE
from streamd.preprocess import Letterbox

# Limited range: Y in [16, 235], C in [16, 240]. (R, G, B) = Yc*(Y-16) + (rv*V, gu*U + gv*V, bu*U)
COEFFICIENTS = {
    "bt601": (1.164383, 1.596027, -0.391762, -0.812968, 2.017232),
    "bt709": (1.164383, 1.792741, -0.213249, -0.532909, 2.112402),
}

_KERNEL = r"""
extern "C" __global__
void nv12_letterbox(const unsigned char* y, int y_pitch, const unsigned char* uv, int uv_pitch,
                    int src_w, int src_h, unsigned char* out, int out_w, int out_h,
                    float scale, int pad_x, int pad_y, int new_w, int new_h, unsigned char pad,
                    float yc, float rv, float gu, float gv, float bu)
{
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    unsigned char* px = out + ((size_t)oy * out_w + ox) * 3;
    int rx = ox - pad_x, ry = oy - pad_y;
    if (rx < 0 || ry < 0 || rx >= new_w || ry >= new_h) { px[0] = px[1] = px[2] = pad; return; }
    float sx = fminf(fmaxf((rx + 0.5f) / scale - 0.5f, 0.0f), src_w - 1.0f);
    float sy = fminf(fmaxf((ry + 0.5f) / scale - 0.5f, 0.0f), src_h - 1.0f);
    int x0 = (int)sx, y0 = (int)sy;
    int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);
    float fx = sx - x0, fy = sy - y0;
    float luma = (1 - fy) * ((1 - fx) * y[y0 * y_pitch + x0] + fx * y[y0 * y_pitch + x1])
               + fy * ((1 - fx) * y[y1 * y_pitch + x0] + fx * y[y1 * y_pitch + x1]);
    int cx = min((int)(sx * 0.5f), src_w / 2 - 1), cy = min((int)(sy * 0.5f), src_h / 2 - 1);
    float u = uv[cy * uv_pitch + 2 * cx] - 128.0f;
    float v = uv[cy * uv_pitch + 2 * cx + 1] - 128.0f;
    float l = yc * (luma - 16.0f);
    float r = l + rv * v, g = l + gu * u + gv * v, b = l + bu * u;
    px[0] = (unsigned char)fminf(fmaxf(r + 0.5f, 0.0f), 255.0f);
    px[1] = (unsigned char)fminf(fmaxf(g + 0.5f, 0.0f), 255.0f);
    px[2] = (unsigned char)fminf(fmaxf(b + 0.5f, 0.0f), 255.0f);
}
"""


def matrix_for(colorspace_name: str | None) -> str:
    """libswscale's choice: BT.709 only when the stream says so."""
    return "bt709" if colorspace_name and "709" in colorspace_name.lower() else "bt601"


class GpuLetterbox:
    """Compiled once per process; call with the NV12 planes of one frame."""

    def __init__(self) -> None:
        import cupy

        self._cupy = cupy
        self._kernel = cupy.RawKernel(_KERNEL, "nv12_letterbox")

    def nv12_into(self, y: Any, uv: Any, box: Letterbox, out: Any, matrix: str = "bt601", stream: Any = None) -> None:
        """`y` [H, W] and `uv` [H/2, W] (interleaved) uint8 device arrays -> `out` [h, w, 3] uint8.

        Pitched planes (as NVDEC gives them) are fine: the row strides are passed on.
        """
        cupy = self._cupy
        out_h, out_w = out.shape[0], out.shape[1]
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous (a [H, W, 3] slice of the input buffer)")
        new_w = round(box.source_width * box.scale)
        new_h = round(box.source_height * box.scale)
        yc, rv, gu, gv, bu = COEFFICIENTS[matrix]
        block = (16, 16, 1)
        grid = ((out_w + 15) // 16, (out_h + 15) // 16, 1)
        args = (
            y, cupy.int32(y.strides[0]), uv, cupy.int32(uv.strides[0]),
            cupy.int32(box.source_width), cupy.int32(box.source_height),
            out, cupy.int32(out_w), cupy.int32(out_h),
            cupy.float32(box.scale), cupy.int32(box.pad_x), cupy.int32(box.pad_y),
            cupy.int32(new_w), cupy.int32(new_h), cupy.uint8(PAD_VALUE),
            cupy.float32(yc), cupy.float32(rv), cupy.float32(gu), cupy.float32(gv), cupy.float32(bu),
        )  # fmt: skip
        self._kernel(grid, block, args, stream=stream)

    def letterbox_frame(self, frame: Any, width: int, height: int) -> tuple[Any, Letterbox]:
        """An NVDEC frame (`is_hw_owned`, NV12 on the GPU) -> its letterboxed [H, W, 3] device array.

        Runs in the camera's decode thread and waits for the kernel, so the decoder's
        surface can be reused as soon as this returns and only the small letterboxed
        image waits in the slot.
        """
        from streamd.preprocess import letterbox_geometry

        cupy = self._cupy
        _, _, box = letterbox_geometry(frame.width, frame.height, width, height)
        y = cupy.from_dlpack(frame.planes[0])
        uv = cupy.from_dlpack(frame.planes[1])  # [H/2, W] or [H/2, W/2, 2]: same bytes, same row pitch
        out = cupy.empty((height, width, 3), dtype=cupy.uint8)
        stream = cupy.cuda.get_current_stream()
        self.nv12_into(y, uv, box, out, matrix_for(str(getattr(frame, "colorspace", "") or "")), stream)
        stream.synchronize()
        return out, box
