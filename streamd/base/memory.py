"""How much memory this process holds and the machine has left (Linux /proc; None elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size now (not the peak) of this process, or of process `pid`."""
    try:
        resident_pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int | None:
    """MemAvailable: what can be allocated without swapping, page cache included."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None
