"""How much memory this process holds (Linux /proc; None elsewhere); what the machine
leaves it is `streamd.machine.limits`'s."""

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
