"""A stand-in for the NVIDIA driver's libcuda, at the boundary where streamd calls it.

`Libcuda` answers the four primary-context calls and cuDeviceGetName as libcuda does (results through the
`ctypes.byref` arguments, 0 for success) and records them; `ffmpeg_opens_nvdec` is
FFmpeg's own `cuda_context_init` (libavutil/hwcontext_cuda.c) on that state: refused
(ENOTSUP) when the context is active with flags other than CU_CTX_SCHED_BLOCKING_SYNC,
else given those flags and retained.
"""

from __future__ import annotations

from typing import Any

from streamd.gpu.context import CU_CTX_SCHED_BLOCKING_SYNC


class Libcuda:
    def __init__(self, flags: int = 0, active: bool = False, name: str = "NVIDIA A10") -> None:
        self.flags, self.active, self.name = flags, active, name
        self.calls: list[str] = []

    def cuInit(self, flags: int) -> int:
        self.calls.append("cuInit")
        return 0

    def cuDeviceGet(self, device: Any, ordinal: int) -> int:
        self.calls.append("cuDeviceGet")
        device._obj.value = ordinal
        return 0

    def cuDeviceGetName(self, name: Any, length: int, device: Any) -> int:
        self.calls.append("cuDeviceGetName")
        name.value = self.name.encode()[: length - 1]
        return 0

    def cuDevicePrimaryCtxGetState(self, device: Any, flags: Any, active: Any) -> int:
        self.calls.append("cuDevicePrimaryCtxGetState")
        flags._obj.value, active._obj.value = self.flags, int(self.active)
        return 0

    def cuDevicePrimaryCtxSetFlags(self, device: Any, flags: int) -> int:
        self.calls.append("cuDevicePrimaryCtxSetFlags")
        self.flags = flags
        return 0

    def first_cuda_use(self, by: str) -> None:
        """The CUDA runtime retains the primary context, with whatever flags it has."""
        self.calls.append(f"import {by}")
        self.active = True

    def ffmpeg_opens_nvdec(self) -> bool:
        if self.active and self.flags != CU_CTX_SCHED_BLOCKING_SYNC:
            return False  # "Primary context already active with incompatible flags": ENOTSUP
        self.flags, self.active = CU_CTX_SCHED_BLOCKING_SYNC, True
        return True
