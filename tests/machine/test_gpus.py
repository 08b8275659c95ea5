"""GPUs through NVML, with a stand-in at the library's boundary that answers as
nvidia-ml-py does (str names, memory as an object with total/free/used, the CUDA driver
version as 12040, NVMLError when there is no driver)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamd.machine.auto import engine_choices
from streamd.machine.gpus import read_gpus
from streamd.machine.hardware import Machine
from streamd.machine.limits import Limits

GIB = 2**30


class NVMLError(Exception):
    pass


@dataclass
class Memory:
    total: int
    free: int
    used: int


class StandInNvml:
    def __init__(self, boards: list[tuple[str, int, int, tuple[int, int]]], present: bool = True) -> None:
        self.boards = boards
        self.present = present
        self.shut = False

    def nvmlInit(self) -> None:
        if not self.present:
            raise NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.boards[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Memory:
        _, total, free, _ = self.boards[handle]
        return Memory(total, free, total - free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.boards[handle][3]

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


def test_each_visible_gpu_with_its_memory_capability_and_nvdec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    nvml = StandInNvml(
        [("NVIDIA A10", 24 * GIB, 22 * GIB, (8, 6)), ("NVIDIA H100 80GB HBM3", 80 * GIB, 79 * GIB, (9, 0))]
    )
    report = read_gpus(nvml)
    [gpu] = report.gpus  # the one this process is given
    assert (gpu.index, gpu.name, gpu.memory_total, gpu.compute_capability, gpu.nvdec_engines) == (
        1,
        "NVIDIA H100 80GB HBM3",
        80 * GIB,
        "9.0",
        7,
    )
    assert (report.driver, report.cuda_driver, report.why_none) == ("550.54.15", "12.4", None)
    assert nvml.shut


def test_no_driver_is_no_gpu_with_the_reason() -> None:
    report = read_gpus(StandInNvml([], present=False))
    assert report.gpus == () and report.why_none == "NVML unavailable: Driver Not Loaded"


def test_a_small_gpu_gets_the_batch_its_memory_holds() -> None:
    nvml = StandInNvml([("Tesla T4", 16 * GIB, 1 * GIB, (7, 5))])
    machine = Machine(Limits(8, 8, "8 CPU(s)", 32 * GIB, 20 * GIB, "MemAvailable"), read_gpus(nvml))
    choices = engine_choices(machine, on_gpu=True, cameras=40)
    assert choices.max_batch.value == 8, "half of 1 GiB free at 64 MiB a frame"
    assert "1.0 GiB free on Tesla T4" in choices.max_batch.why
    assert choices.instances.value == 1


def test_check_hardware_prints_a_table_and_json_here(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"")  # only looked for: nothing is loaded
    config = tmp_path / "streams.yaml"
    config.write_text("engine: {model: m.onnx}\ncameras: []\n")
    table = subprocess.run(
        [sys.executable, "-m", "streamd", "check", "--hardware", str(config)], capture_output=True, text=True
    )
    assert table.returncode == 0, table.stderr
    assert "usable of" in table.stdout and "engine.instances=" in table.stdout
    as_json: Any = subprocess.run(
        [sys.executable, "-m", "streamd", "check", "--hardware", "--json", str(config)],
        capture_output=True,
        text=True,
    )
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["machine"]["cpu"]["cores"] >= 1
    assert [c["knob"] for c in found["auto"][str(config)]] == [
        "engine.instances",
        "engine.threads",
        "batcher.max_batch",
    ]
