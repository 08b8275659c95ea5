"""Compile CUDA C with NVRTC, no GPU needed: the pip wheel `nvidia-cuda-nvrtc-cu12` (dev extra).

CuPy compiles `RawKernel` source with NVRTC at run time; compiling the same source here
finds syntax and type errors in CI instead of on the first GPU that runs it.
"""

from __future__ import annotations

import ctypes
from pathlib import Path


def nvrtc_library() -> ctypes.CDLL | None:
    try:
        import nvidia.cuda_nvrtc  # type: ignore[import-untyped]
    except ImportError:
        return None
    for directory in nvidia.cuda_nvrtc.__path__:
        for candidate in sorted(Path(directory, "lib").glob("libnvrtc.so.*")):
            return ctypes.CDLL(str(candidate))
    return None


def compile_to_ptx(library: ctypes.CDLL, source: str, options: list[str]) -> str:
    """The PTX of `source`; raises RuntimeError with NVRTC's log when it does not compile."""
    program = ctypes.c_void_p()
    _check(library, library.nvrtcCreateProgram(ctypes.byref(program), source.encode(), b"kernel.cu", 0, None, None))
    try:
        encoded = [option.encode() for option in options]
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        result = library.nvrtcCompileProgram(program, len(encoded), array)
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        if result != 0:
            raise RuntimeError(f"NVRTC: {log.value.decode(errors='replace')}")
        library.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(library, library.nvrtcGetPTX(program, ptx))
        return ptx.value.decode()
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _check(library: ctypes.CDLL, result: int) -> None:
    if result != 0:
        library.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"NVRTC error {result}: {library.nvrtcGetErrorString(result).decode()}")
