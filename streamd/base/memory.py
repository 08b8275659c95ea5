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


def resident_by_kind(pid: int | None = None) -> dict[str, int]:
    """Resident bytes by kind of mapping (/proc/PID/smaps): `heap` (malloc's main arena),
    `anonymous` (large allocations, other malloc arenas, thread stacks), `files` (shared
    libraries and mapped files), `other` ([stack], [vdso] and such). Empty off Linux."""
    kinds: dict[str, int] = {}
    kind = "other"
    try:
        lines = Path(f"/proc/{pid or 'self'}/smaps").read_text().splitlines()
    except OSError:
        return kinds
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            kind = _kind_of(fields[5] if len(fields) > 5 else "")
        elif fields[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0) + int(fields[1]) * 1024
    return kinds


def _kind_of(path: str) -> str:
    if path == "[heap]":
        return "heap"
    if not path:
        return "anonymous"
    return "files" if path.startswith("/") else "other"
