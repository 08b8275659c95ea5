"""Which YUV -> RGB conversion a decoded frame needs, decided once for every path.

The CPU letterbox (libswscale), the GPU kernel and its NumPy twin all read the matrix
and the range from here, so a camera's picture converts the same on either path.

- Range: IP cameras often send full-range video (`yuvj420p`, or `color_range` JPEG);
  treating it as limited range crushes blacks and clips highlights.
- Matrix: PyAV's `frame.colorspace` is FFmpeg's integer AVColorSpace. BT.709 and
  BT.2020 are used only when the stream says so; everything else (unspecified
  included) is BT.601, which is what libswscale assumes too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

# FFmpeg's AVColorSpace and AVColorRange values (libavutil/pixfmt.h).
_AVCOL_SPC_BT709 = 1
_AVCOL_SPC_BT2020_NCL = 9
_AVCOL_SPC_BT2020_CL = 10
_AVCOL_RANGE_MPEG = 1
_AVCOL_RANGE_JPEG = 2


class YuvMatrix(enum.Enum):
    """Luma weights (Kr, Kb) of each standard, and libswscale's SWS_CS_* number for it."""

    bt601 = (0.299, 0.114, 5)
    bt709 = (0.2126, 0.0722, 1)
    bt2020 = (0.2627, 0.0593, 9)

    @property
    def swscale_colorspace(self) -> int:
        return self.value[2]


@dataclass(frozen=True, slots=True)
class YuvColour:
    matrix: YuvMatrix = YuvMatrix.bt601
    full_range: bool = False

    def rgb_coefficients(self) -> tuple[float, float, float, float, float, float]:
        """(y_scale, y_offset, rv, gu, gv, bu) for 8-bit samples:

        L = y_scale * (Y - y_offset); R = L + rv*V; G = L + gu*U + gv*V; B = L + bu*U,
        with U and V already centred (sample - 128).
        """
        kr, kb, _ = self.matrix.value
        kg = 1.0 - kr - kb
        y_scale, y_offset, c_scale = (1.0, 0.0, 1.0) if self.full_range else (255 / 219, 16.0, 255 / 224)
        return (
            y_scale,
            y_offset,
            c_scale * 2 * (1 - kr),
            -c_scale * 2 * kb * (1 - kb) / kg,
            -c_scale * 2 * kr * (1 - kr) / kg,
            c_scale * 2 * (1 - kb),
        )

    @property
    def swscale_range(self) -> int:
        return _AVCOL_RANGE_JPEG if self.full_range else _AVCOL_RANGE_MPEG


def colour_of(frame: Any) -> YuvColour:
    """The conversion a PyAV VideoFrame (software or hardware) needs."""
    space = int(frame.colorspace or 0)
    if space == _AVCOL_SPC_BT709:
        matrix = YuvMatrix.bt709
    elif space in (_AVCOL_SPC_BT2020_NCL, _AVCOL_SPC_BT2020_CL):
        matrix = YuvMatrix.bt2020
    else:
        matrix = YuvMatrix.bt601
    format_name = frame.format.name if frame.format is not None else ""
    full = int(frame.color_range or 0) == _AVCOL_RANGE_JPEG or format_name.startswith("yuvj")
    return YuvColour(matrix, full)
