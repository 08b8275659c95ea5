"""`python -m devtools.auto_reference [--write]`: the table in docs/operations.md of what
`auto` chooses on a few machine shapes, made by the rules themselves
(`streamd.machine.auto`); tests/machine/test_auto.py fails when the table is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamd.machine.auto import engine_choices
from streamd.machine.gpus import Gpu, GpuReport
from streamd.machine.hardware import Machine
from streamd.machine.limits import Limits

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BEGIN = "<!-- auto table: python -m devtools.auto_reference --write -->"
END = "<!-- end of the auto table -->"
_GIB = 2**30


def _gpu(name: str, total_gib: int, nvdec: int) -> GpuReport:
    free = int(total_gib * 0.95 * _GIB)
    return GpuReport((Gpu(0, name, total_gib * _GIB, free, None, nvdec),), "550", "12.4")


# (what, machine, cameras, the engine runs on the GPU)
SHAPES: list[tuple[str, Machine, int, bool]] = [
    (
        "this project's box: 2 cores, 24 GiB, no GPU",
        Machine(Limits(2, 2, "2 CPU(s)", 24 * _GIB, 23 * _GIB, "MemAvailable"), GpuReport(())),
        16,
        False,
    ),
    (
        "16 cores, 64 GiB, no GPU",
        Machine(Limits(16, 16, "16 CPU(s)", 64 * _GIB, 60 * _GIB, "MemAvailable"), GpuReport(())),
        24,
        False,
    ),
    (
        "the same under `CPUQuota=400%`, `MemoryMax=1G`",
        Machine(
            Limits(16, 4, "cgroup CPU quota of 4 core(s)", 64 * _GIB, 1 * _GIB, "cgroup memory limit"), GpuReport(())
        ),
        24,
        False,
    ),
    (
        "A10 box: 16 cores, 64 GiB, A10 24 GB",
        Machine(Limits(16, 16, "16 CPU(s)", 64 * _GIB, 60 * _GIB, "MemAvailable"), _gpu("NVIDIA A10", 24, 2)),
        70,
        True,
    ),
    (
        "H100 box: 32 cores, 256 GiB, H100 80 GB",
        Machine(
            Limits(32, 32, "32 CPU(s)", 256 * _GIB, 240 * _GIB, "MemAvailable"), _gpu("NVIDIA H100 80GB HBM3", 80, 7)
        ),
        200,
        True,
    ),
    (
        "H200 box: 32 cores, 256 GiB, H200 141 GB",
        Machine(Limits(32, 32, "32 CPU(s)", 256 * _GIB, 240 * _GIB, "MemAvailable"), _gpu("NVIDIA H200", 141, 7)),
        200,
        True,
    ),
]


def table() -> str:
    lines = [
        BEGIN,
        "",
        "| machine | cameras | engine on | instances | threads | max_batch | NVDEC budget |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for what, machine, cameras, on_gpu in SHAPES:
        chosen = engine_choices(machine, on_gpu, cameras)
        gpus = machine.gpus.gpus
        nvdec = f"{gpus[0].nvdec_engines * 748} frames/s" if gpus and gpus[0].nvdec_engines else "none"
        lines.append(
            f"| {what} | {cameras} | {'GPU' if on_gpu else 'CPU'} | {chosen.instances.value} | "
            f"{chosen.threads.value} | {chosen.max_batch.value} | {nvdec} |"
        )
    lines += ["", "Why, for each row:", ""]
    for what, machine, cameras, on_gpu in SHAPES:
        chosen = engine_choices(machine, on_gpu, cameras)
        lines.append(f"- {what}: " + "; ".join(f"`{c.knob}` {c.value}: {c.why}" for c in chosen.all()) + ".")
    lines += ["", END]
    return "\n".join(lines)


def current_doc() -> str:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + table() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.auto_reference", description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/operations.md")
    args = parser.parse_args(argv)
    if args.write:
        DOC.write_text(current_doc())
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
