"""GPU metrics through NVML (`nvidia-ml-py`, the `gpu` extra), read at scrape time.

Without the library, the driver or a GPU, `GpuCollector.create()` returns None and no
`streamd_gpu_*` series exist at all (an absent series, not a zero, is what alerts
expect from a machine without a GPU). Each figure NVML cannot give for a GPU (some
boards lack power or decoder counters) is left out on its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# name, help, reader(nvml, handle) -> value
_FIGURES: list[tuple[str, str, Callable[[Any, Any], float]]] = [
    (
        "streamd_gpu_utilization_ratio",
        "GPU busy share over the last sample period.",
        lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100,
    ),
    ("streamd_gpu_memory_used_bytes", "GPU memory in use.", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used),
    ("streamd_gpu_memory_total_bytes", "GPU memory in all.", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total),
    (
        "streamd_gpu_decoder_utilization_ratio",
        "NVDEC busy share.",
        lambda nvml, h: nvml.nvmlDeviceGetDecoderUtilization(h)[0] / 100,
    ),
    (
        "streamd_gpu_encoder_utilization_ratio",
        "NVENC busy share.",
        lambda nvml, h: nvml.nvmlDeviceGetEncoderUtilization(h)[0] / 100,
    ),
    (
        "streamd_gpu_temperature_celsius",
        "GPU core temperature.",
        lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
    ),
    ("streamd_gpu_power_watts", "GPU power draw.", lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),
]


def visible_gpus(cuda_visible_devices: str | None, count: int) -> list[int]:
    """The NVML indices of the GPUs this process uses.

    NVML sees every GPU of the machine whatever CUDA_VISIBLE_DEVICES says; with one
    instance per GPU (`streamd@.service`) each instance reports its own GPU only. The
    template sets CUDA_DEVICE_ORDER=PCI_BUS_ID, the order NVML numbers GPUs in. A list
    that is not plain indices (UUIDs, MIG devices) is not mapped: every GPU is reported.
    """
    every = list(range(count))
    if cuda_visible_devices is None:
        return every
    indices = [part.strip() for part in cuda_visible_devices.split(",") if part.strip()]
    if not all(index.isdigit() for index in indices):
        return every
    return [index for index in map(int, indices) if index < count]


class GpuCollector(Collector):
    def __init__(self, nvml: Any, handles: list[tuple[str, str, Any]]) -> None:
        self._nvml = nvml
        self._handles = handles  # (index, name, handle)

    @classmethod
    def create(cls) -> GpuCollector | None:
        try:
            import pynvml as nvml

            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as error:  # noqa: BLE001 - ImportError, NVMLError (no driver, no GPU)...
            log.info("no GPU metrics: %s", error or type(error).__name__)
            return None
        handles = []
        for index in visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception as error:  # noqa: BLE001 - NVMLError: a GPU this process may not open
                log.info("no GPU metrics for GPU %d: %s", index, error or type(error).__name__)
                continue
            handles.append((str(index), name.decode() if isinstance(name, bytes) else str(name), handle))
        if not handles:
            return None
        log.info("GPU metrics for %s", ", ".join(name for _, name, _ in handles))
        return cls(nvml, handles)

    def collect(self) -> Iterator[Metric]:
        for metric_name, help_text, read in _FIGURES:
            family = GaugeMetricFamily(metric_name, help_text, labels=["gpu", "name"])
            for index, name, handle in self._handles:
                try:
                    family.add_metric([index, name], float(read(self._nvml, handle)))
                except Exception:  # noqa: BLE001 - this board lacks this counter
                    continue
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
