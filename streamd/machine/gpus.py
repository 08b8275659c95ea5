"""The GPUs this process may use, through NVML (`nvidia-ml-py`, the GPU extras).

NVML answers without starting CUDA (which NVDEC needs started its own way: see
`streamd.gpu.context`). Without the library, a driver or a GPU the list is empty and
says why. NVDEC engines come from streamd's table of GPU models (NVML does not count
them); versions of TensorRT, the CUDA runtime and ONNX Runtime from what is installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any

from streamd.gpu.nvdec_budget import engines_of
from streamd.metrics.gpu import visible_gpus

_PACKAGES = (
    *("onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    *("cupy-cuda12x", "cupy-cuda13x", "av"),
)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int
    memory_free: int
    compute_capability: str | None
    nvdec_engines: int | None
    """From streamd's table of GPU models; None: a model it does not know."""


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[Gpu, ...]
    driver: str | None = None
    cuda_driver: str | None = None
    """The newest CUDA the driver runs ("12.4")."""
    why_none: str | None = None


def read_gpus(library: Any | None = None) -> GpuReport:
    """The visible GPUs (`CUDA_VISIBLE_DEVICES`); `library`: pynvml, or a stand-in in tests."""
    try:
        nvml: Any = library if library is not None else importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as error:  # noqa: BLE001 - ImportError, NVMLError (no driver, no GPU)
        return GpuReport((), why_none=f"NVML unavailable: {error or type(error).__name__}")
    try:
        count = nvml.nvmlDeviceGetCount()
        gpus = []
        for index in visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle))
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                Gpu(index, name, int(memory.total), int(memory.free), _capability(nvml, handle), engines_of(name))
            )
        return GpuReport(tuple(gpus), _text(nvml.nvmlSystemGetDriverVersion()), _cuda_version(nvml))
    except Exception as error:  # noqa: BLE001 - NVMLError of a GPU fallen off the bus, and the like
        return GpuReport((), why_none=f"NVML failed: {error or type(error).__name__}")
    finally:
        with contextlib.suppress(Exception):  # nothing to undo
            nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _capability(nvml: Any, handle: Any) -> str | None:
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    except Exception:  # noqa: BLE001 - older drivers
        return None
    return f"{major}.{minor}"


def _cuda_version(nvml: Any) -> str | None:
    try:
        version = int(nvml.nvmlSystemGetCudaDriverVersion())
    except Exception:  # noqa: BLE001 - older drivers
        return None
    return f"{version // 1000}.{version % 1000 // 10}"


def package_versions() -> dict[str, str]:
    """Inference and GPU packages installed, by name (absent ones left out)."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
