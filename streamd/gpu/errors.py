"""Which exceptions are the GPU's, without importing CuPy to ask."""

from __future__ import annotations


def raised_by_cupy(error: BaseException) -> bool:
    """CuPy's own errors (out of memory, CUDA runtime and driver errors), by where their
    class lives: the camera and engine code that catches them must not need CuPy."""
    return type(error).__module__.startswith(("cupy", "cupyx", "cupy_backends"))
