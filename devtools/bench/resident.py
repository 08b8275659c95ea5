"""Resident memory by kind of mapping (/proc/PID/smaps): how the memory benchmarks tell
a leak from the allocator's slack."""

from __future__ import annotations

from pathlib import Path


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
