"""What this machine gives streamd: usable cores and memory, GPUs, inference packages.
`streamd check --hardware` prints it; the `auto` rules (`streamd.machine.auto`) size
the engine from it."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamd.machine.gpus import GpuReport, package_versions, read_gpus
from streamd.machine.limits import Limits, read_limits

_GIB = 2**30


@dataclass(frozen=True)
class Machine:
    limits: Limits
    gpus: GpuReport
    cpu_model: str = ""
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def cores(self) -> int:
        return self.limits.cores

    def key(self) -> str:
        """Names the machine for caches of what was measured on it."""
        gpus = ",".join(gpu.name for gpu in self.gpus.gpus) or "no-gpu"
        return f"{self.cpu_model or platform.machine()}|{self.limits.cores}|{gpus}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu": {
                "model": self.cpu_model,
                "host_cores": self.limits.host_cores,
                "cores": self.limits.cores,
                "cores_from": self.limits.cores_why,
            },
            "memory": {
                "total_bytes": self.limits.memory_total,
                "available_bytes": self.limits.memory_available,
                "available_from": self.limits.memory_why,
            },
            "gpus": [asdict(gpu) for gpu in self.gpus.gpus],
            "gpu_driver": self.gpus.driver,
            "cuda_driver": self.gpus.cuda_driver,
            "gpus_absent_because": self.gpus.why_none,
            "packages": self.packages,
        }

    def table(self) -> list[tuple[str, str]]:
        """(what, found) rows for a terminal."""
        limits = self.limits
        rows = [
            ("CPU", self.cpu_model or platform.machine()),
            ("cores", f"{limits.cores} usable of {limits.host_cores} ({limits.cores_why})"),
            (
                "memory",
                f"{_gib(limits.memory_available)} available of {_gib(limits.memory_total)} ({limits.memory_why})",
            ),
        ]
        for gpu in self.gpus.gpus:
            nvdec = f"{gpu.nvdec_engines} NVDEC" if gpu.nvdec_engines is not None else "NVDEC count unknown"
            capability = f"compute {gpu.compute_capability}" if gpu.compute_capability else "compute ?"
            memory = f"{_gib(gpu.memory_free)} free of {_gib(gpu.memory_total)}"
            rows.append((f"GPU {gpu.index}", f"{gpu.name}, {memory}, {capability}, {nvdec}"))
        if self.gpus.gpus:
            rows.append(("driver", f"{self.gpus.driver} (CUDA {self.gpus.cuda_driver or '?'})"))
        else:
            rows.append(("GPU", f"none ({self.gpus.why_none})"))
        rows += [(name, version) for name, version in sorted(self.packages.items())]
        return rows


def detect_machine(root: Path = Path("/"), nvml: Any | None = None) -> Machine:
    return Machine(read_limits(root), read_gpus(nvml), _cpu_model(root), package_versions())


def _cpu_model(root: Path) -> str:
    try:
        for line in (root / "proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / _GIB:.1f} GiB"
