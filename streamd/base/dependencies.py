"""Versions of the libraries streamd relies on, checked before anything imports them.

pip enforces `av>=18.1` at install time, but a system site-packages, an old wheel
pinned by another project, or a hand-built PyAV can still shadow it. Older releases
fail in confusing ways: 14.0 has no `av.codec.hwaccel` (the daemon cannot even
import, CPU included), 14.1 to 16.x lack `is_hw_owned` and DLPack export of hardware
frames, 17.x drops colour tags when downloading NVDEC frames and fails to reformat
them, 18.0 lacks `VideoFrame.sw_format`. So the command line says which one it found.
"""

from __future__ import annotations

import re
from importlib import metadata

MINIMUM_PYAV = (18, 1)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def pyav_problem() -> str | None:
    """Why the installed PyAV cannot run streamd, or None when it can."""
    try:
        version = metadata.version("av")
    except metadata.PackageNotFoundError:
        try:
            import av  # a PyAV without package metadata (built in place, vendored)
        except ImportError:
            return "PyAV is not installed: pip install 'av>=18.1'"
        version = str(getattr(av, "__version__", "0"))
    if _release(version) < MINIMUM_PYAV:
        wanted = ".".join(map(str, MINIMUM_PYAV))
        return (
            f"PyAV {version} is installed; streamd needs PyAV >= {wanted} (hardware decode, DLPack, "
            f"colour tags of NVDEC frames): pip install --upgrade 'av>={wanted}'"
        )
    return None
