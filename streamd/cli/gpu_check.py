"""`streamd gpu-check`: prove the GPU path on this machine (NVDEC, GPU letterbox, TensorRT, NVML)."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamd.cli.commands import Commands


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from streamd.service.gpu_check import run_checks

    return run_checks(args)


def add_to(commands: Commands) -> None:
    gpu = commands.add_parser("gpu-check", help="prove the GPU path here: NVDEC, GPU letterbox, TensorRT, NVML")
    _arguments(gpu)
    gpu.set_defaults(func=_cmd_gpu_check)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", default="1,8,32", help="concurrent NVDEC streams to measure")
    parser.add_argument("--seconds", type=float, default=8.0, help="decode time per measurement")
    parser.add_argument("--model", type=Path, default=None, help="YOLOv5-Face ONNX (default: the shared assets')")
    parser.add_argument("--photo", type=Path, default=None, help="a photo of faces for TensorRT (default: shared)")
    parser.add_argument("--work", type=Path, default=Path(".cache") / "gpu-check", help="the test clip and model")
