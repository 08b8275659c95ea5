"""NVDEC beside the engine in one process: the CUDA primary context gets the flags
FFmpeg's NVDEC wants before anything uses CUDA, through `Daemon.start`.

No GPU here: the driver is stood in for at its boundary (`tests.support.libcuda`). An import hook
records when CuPy and TensorRT are first imported and marks the context active, as
their first use of the GPU does.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import streamd.gpu.context as context
from streamd.config.loader import LoadedConfig
from streamd.config.schema import StreamsConfig
from streamd.gpu.context import primary_context_problem, share_primary_context
from streamd.service.daemon import Daemon, DaemonOptions
from tests.support.libcuda import Libcuda


class FirstCudaUse(importlib.abc.MetaPathFinder):
    """Records the first import of CuPy and TensorRT (neither is installed here)."""

    def __init__(self, driver: Libcuda) -> None:
        self.driver = driver

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name in ("cupy", "tensorrt") and f"import {name}" not in self.driver.calls:
            self.driver.first_cuda_use(name)
        return None  # the usual finders go on: not installed, ImportError


@pytest.fixture
def driver(monkeypatch: pytest.MonkeyPatch) -> Any:
    libcuda = Libcuda()
    monkeypatch.setattr(context, "load_libcuda", lambda: libcuda)  # the edge: the NVIDIA driver
    monkeypatch.setattr(sys, "meta_path", [FirstCudaUse(libcuda), *sys.meta_path])
    for module in ("cupy", "tensorrt"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    yield libcuda
    share_primary_context(Libcuda())  # what the next test finds: a context NVDEC can share


def test_the_daemon_sets_the_flags_before_anything_imports_cupy_or_tensorrt(
    driver: Libcuda, canonical_model: Path
) -> None:
    config = StreamsConfig.model_validate({"engine": {"model": str(canonical_model)}, "cameras": []})

    async def start_and_stop() -> None:
        daemon = Daemon(LoadedConfig(config), DaemonOptions(metrics_port=0, rate_log_interval_s=3600))
        await daemon.start()
        await daemon.stop()

    asyncio.run(start_and_stop())
    assert "import cupy" in driver.calls, "backend auto tried TensorRT, which imports CuPy"
    assert driver.calls.index("cuDevicePrimaryCtxSetFlags") < driver.calls.index("import cupy"), driver.calls
    assert driver.ffmpeg_opens_nvdec(), "FFmpeg's check passes after CuPy and TensorRT came"
    assert primary_context_problem() is None


def test_a_context_started_too_early_is_said_once_for_every_camera(driver: Libcuda) -> None:
    driver.first_cuda_use("something else")  # with the default flags
    problem = share_primary_context()
    assert problem is not None and "used CUDA first" in problem and "0x4" in problem
    assert primary_context_problem() == problem
    assert "cuDevicePrimaryCtxSetFlags" not in driver.calls, "an active context's flags are not touched"
