"""How many frames a second the GPU's NVDEC can decode: the budget cameras are placed in.

Sampling does not reduce decoding (every frame of an H.264 GOP is decoded to reach the
sampled ones), so 70 cameras of 1080p at 25 fps ask NVDEC for 1,750 frames/s while an
A10's two NVDEC engines give about 1,500. Past its capacity NVDEC does not refuse: every
camera on it falls behind together. The budget is counted in 1080p-equivalent frames a
second (a frame of W x H pixels counts W*H / (1920*1080)).

Capacity = NVDEC engines of the GPU model (NVIDIA's datasheets and the Video Encode and
Decode GPU Support Matrix) x about 748 frames/s of H.264 1080p per engine (NVIDIA's
NVDEC application note, Ampere; H.265 is a little slower, about 1,415 for two). The
per-engine figure of other generations is taken as Ampere's: an estimate, which
`nvdec.budget_fps` in streams.yaml overrides with what the box measured. The model comes
from the driver (cuDeviceGetName for device 0, as FFmpeg numbers devices).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from streamd.gpu.context import load_libcuda

FRAMES_PER_ENGINE = 748.0
"""H.264 1080p frames a second one NVDEC engine decodes (Ampere, NVIDIA's application note)."""

NVDEC_ENGINES: dict[str, int] = {
    "T4": 2,
    "A2": 2,
    "A10": 2,
    "A16": 2,  # per GPU; the board has four
    "A30": 4,
    "A40": 2,
    "A100": 5,
    "L4": 4,
    "L40": 3,
    "L40S": 3,
    "H100": 7,
    "H200": 7,
}
"""NVDEC engines per GPU model, from NVIDIA's datasheets."""


@dataclass(frozen=True)
class NvdecBudget:
    fps: float
    """1080p-equivalent frames a second that cameras may be placed on NVDEC for."""
    source: str
    """Where the figure comes from, for the log, /status and `check --deep`."""


def engines_of(gpu_name: str) -> int | None:
    """NVDEC engines of a GPU by the name the driver gives ('NVIDIA A100-SXM4-80GB'), or None."""
    for token in gpu_name.replace("-", " ").split():
        engines = NVDEC_ENGINES.get(token.upper())
        if engines is not None:
            return engines
    return None


def budget_for(gpu_name: str | None, configured_fps: float | None) -> NvdecBudget:
    """The budget: `nvdec.budget_fps` when set, else the GPU model's from the table."""
    if configured_fps is not None:
        return NvdecBudget(configured_fps, "nvdec.budget_fps in the configuration")
    name = gpu_name or "an unnamed GPU"
    engines = engines_of(name)
    if engines is None:
        return NvdecBudget(
            FRAMES_PER_ENGINE,
            f"{name} is not in streamd's table of NVDEC engines: one engine's {FRAMES_PER_ENGINE:g} frames/s "
            "assumed (set nvdec.budget_fps)",
        )
    return NvdecBudget(
        engines * FRAMES_PER_ENGINE, f"{name}: {engines} NVDEC engine(s) x {FRAMES_PER_ENGINE:g} frames/s"
    )


def gpu_name(driver: Any | None = None) -> str | None:
    """The name of device 0 from libcuda, or None without a driver or device."""
    libcuda = driver if driver is not None else load_libcuda()
    if libcuda is None:
        return None
    device = ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    if libcuda.cuInit(0) != 0 or libcuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return None
    if libcuda.cuDeviceGetName(name, len(name), device) != 0:
        return None
    return name.value.decode(errors="replace")
