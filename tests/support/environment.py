"""Where the tests run: CI or not, the test video, programs and GPUs they need."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from devtools.testing.rtsp import RtspTestServer
from devtools.testing.video import VideoSpec

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Small and short: these tests check behaviour, not decode speed.
TEST_VIDEO = VideoSpec(width=640, height=360, fps=25, seconds=6, bitrate_kbps=800)


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the set-up must provide this)")
    pytest.skip(reason)


def gpu_missing(*modules: str) -> str | None:
    """Why the GPU tests cannot run here (CuPy, a device, and `modules`), or None."""
    try:
        import importlib

        import cupy

        for module in modules:
            importlib.import_module(module)
        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - ImportError, CUDA runtime errors alike
        return f"needs CuPy{''.join(', ' + m for m in modules)} and an NVIDIA GPU: {error}"
    return None


def system_binary(name: str, package: str) -> str:
    """The path of a program a test needs from Debian, or a skip (a failure under CI) naming the package."""
    import shutil

    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}",) if os.path.exists(p)), None)
    if path is None:
        skip_or_fail(f"{name} not installed (Debian package `{package}`; `make test` installs it as root)")
    assert path is not None
    return path


StartRtspServer = Callable[..., RtspTestServer]
