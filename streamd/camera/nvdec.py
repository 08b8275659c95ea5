"""Is NVDEC possible in this process at all? Asked once, before any camera tries it.

Each camera with `decode: auto` still tries NVDEC itself and falls back on its own
(sessions can run out, a codec profile can be unsupported), but when there is no NVIDIA
driver or FFmpeg has no CUDA, trying per camera and per reconnect would only add a
failed device creation to every connect. This says why, once.
"""

from __future__ import annotations

import ctypes
import functools

from av.codec.hwaccel import hwdevices_available


@functools.cache
def nvdec_unavailable_reason() -> str | None:
    """None when NVDEC may work here; otherwise why it cannot."""
    if "cuda" not in hwdevices_available():
        return "this FFmpeg build has no CUDA hardware decoding"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 not found)"
    try:
        # The driver's video part. A container started without the `video` driver
        # capability has libcuda but not this: the CUDA device opens, then every
        # packet fails.
        ctypes.CDLL("libnvcuvid.so.1")
    except OSError:
        return (
            "the NVIDIA driver has no video decode library (libnvcuvid.so.1 not found;"
            " in a container, add the `video` driver capability)"
        )
    return None
