"""The GPU's CUDA primary context, made ready for NVDEC before anything else starts CUDA.

NVDEC frames that stay on the GPU (PyAV's `HWAccel(is_hw_owned=True)`) make FFmpeg use
the device's primary context, the one CuPy and TensorRT use too. FFmpeg's
`cuda_context_init` (libavutil/hwcontext_cuda.c) wants it with the flags
CU_CTX_SCHED_BLOCKING_SYNC: when the context is not active yet it sets them itself;
when it is already active with other flags it refuses, with ENOTSUP ("Primary context
already active with incompatible flags"). CuPy and TensorRT activate the primary
context with the driver's default flags (0) the moment they first use the GPU, and the
daemon builds its engine and GPU letterbox before any camera opens: without this step
every NVDEC open in the daemon failed.

`share_primary_context` does FFmpeg's own check and setting first, through libcuda
(cuInit, cuDeviceGet, cuDevicePrimaryCtxGetState, cuDevicePrimaryCtxSetFlags), on
device 0 as FFmpeg numbers it (after CUDA_VISIBLE_DEVICES). It must run before anything
in the process uses CUDA; if something already did, with other flags, it says so, and
NVDEC is then unavailable to every camera for that reason (`decode: auto` decodes on
the CPU, `decode: nvdec` fails), instead of each camera finding out at its first open.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

CU_CTX_SCHED_BLOCKING_SYNC = 0x04
"""The flags FFmpeg's NVDEC requires of the primary context."""
_CUDA_SUCCESS = 0

_lock = threading.Lock()
_problem: str | None = None


def load_libcuda() -> Any | None:
    """The NVIDIA driver's CUDA library, or None where there is none."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def share_primary_context(driver: Any | None = None) -> str | None:
    """Give device 0's primary context the flags NVDEC needs, before any CUDA use.

    Returns None when NVDEC can share it (or there is no driver: nothing to share), else
    why not; that reason is kept (`primary_context_problem`). `driver`: libcuda, loaded
    here when not given.
    """
    global _problem
    libcuda = driver if driver is not None else load_libcuda()
    if libcuda is None:
        return None
    device, flags, active = ctypes.c_int(0), ctypes.c_uint(0), ctypes.c_int(0)
    steps: tuple[tuple[str, tuple[Any, ...]], ...] = (
        ("cuInit", (0,)),
        ("cuDeviceGet", (ctypes.byref(device), 0)),
        ("cuDevicePrimaryCtxGetState", (device, ctypes.byref(flags), ctypes.byref(active))),
    )
    problem = None
    for name, args in steps:
        code = getattr(libcuda, name)(*args)
        if code != _CUDA_SUCCESS:
            problem = f"{name} failed with CUDA error {code}"
            break
    else:
        if active.value and flags.value != CU_CTX_SCHED_BLOCKING_SYNC:
            problem = (
                f"the GPU's CUDA primary context was started with flags {flags.value:#x} before streamd could "
                f"give it the ones NVDEC needs ({CU_CTX_SCHED_BLOCKING_SYNC:#x}): something in this process "
                "used CUDA first"
            )
        elif flags.value != CU_CTX_SCHED_BLOCKING_SYNC:
            code = libcuda.cuDevicePrimaryCtxSetFlags(device, CU_CTX_SCHED_BLOCKING_SYNC)
            if code != _CUDA_SUCCESS:
                problem = f"cuDevicePrimaryCtxSetFlags failed with CUDA error {code}"
    with _lock:
        _problem = problem
    if problem is None:
        log.debug("CUDA primary context set up for NVDEC (CU_CTX_SCHED_BLOCKING_SYNC)")
    return problem


def primary_context_problem() -> str | None:
    """Why NVDEC cannot share the primary context, as `share_primary_context` found; None
    when it can or was not asked."""
    with _lock:
        return _problem
