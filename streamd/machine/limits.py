"""The CPU and memory this process may use: not the host's, its own.

A systemd `CPUQuota=200%` or a container's CPU limit leaves a 64-core host's service two
cores' worth of time, and `os.cpu_count()` still says 64: sizing engine instances by it
starts 64 of them, each with its own arena, on two cores. So the cores are the fewest
of: the CPUs the process may run on (its affinity) and its cgroup's CPU quota, rounded
up, the tightest of its cgroup and every ancestor (cgroup v2 `cpu.max`, v1
`cpu.cfs_quota_us`/`cpu.cfs_period_us`). Memory likewise: MemAvailable, or what the
cgroup's limit leaves (`memory.max` less `memory.current`, v1 `memory.limit_in_bytes`
less `memory.usage_in_bytes`, the reclaimable page cache counted as free), whichever is
less.

Everything is read below `root` (`/` in production), so tests read fixture trees of the
real files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

# v1 and v2 spell "no limit" as a huge number or "max".
_UNLIMITED = 2**62


@dataclass(frozen=True)
class Limits:
    host_cores: int
    cores: int
    """Cores this process can keep busy (affinity and CPU quota)."""
    cores_why: str
    memory_total: int | None
    memory_available: int | None
    """Bytes it can still allocate (MemAvailable, or its cgroup's limit less usage)."""
    memory_why: str


def read_limits(root: Path = Path("/"), affinity: int | None = None, host: int | None = None) -> Limits:
    """`affinity` and `host` (CPUs allowed and present) stand in for this process's in tests."""
    host = host or os.cpu_count() or 1
    allowed = min(host, affinity if affinity is not None else _affinity(host))
    cores, why = allowed, f"{allowed} CPU(s) in the affinity mask" if allowed < host else f"{host} CPU(s)"
    quota = _cpu_quota(root)
    if quota is not None and math.ceil(quota[0]) < cores:
        cores, why = max(1, math.ceil(quota[0])), f"cgroup CPU quota of {quota[0]:g} core(s) ({quota[1]})"
    total, available = _meminfo(root)
    memory_why = "MemAvailable"
    limit = _memory_limit(root)
    if limit is not None:
        left, where = limit
        if available is None or left < available:
            available, memory_why = left, f"cgroup memory limit ({where})"
    return Limits(host, cores, why, total, available, memory_why)


def _affinity(host: int) -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return host


def _cgroups(root: Path) -> dict[str, str]:
    """Controller (v1) or "" (v2) -> this process's cgroup path."""
    found: dict[str, str] = {}
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                found[controller] = parts[2]
    return found


def _directories(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount, innermost first. In a
    cgroup namespace the path may not exist under the mount: then the mount is it."""
    inner = mount / path.lstrip("/")
    if not inner.is_dir():
        return [mount] if mount.is_dir() else []
    found = [inner]
    while found[-1] != mount and mount in found[-1].parents:
        found.append(found[-1].parent)
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_quota(root: Path) -> tuple[float, str] | None:
    """The tightest CPU quota in cores over the cgroup and its ancestors, and its file."""
    groups = _cgroups(root)
    tightest: tuple[float, str] | None = None
    candidates: list[tuple[float, Path]] = []
    if "" in groups:
        for directory in _directories(root / "sys/fs/cgroup", groups[""]):
            text = _read(directory / "cpu.max")
            if text and not text.startswith("max"):
                quota, period = text.split()[:2]
                candidates.append((int(quota) / int(period), directory / "cpu.max"))
    if "cpu" in groups:
        mount = next((m for m in (root / "sys/fs/cgroup/cpu", root / "sys/fs/cgroup/cpu,cpuacct") if m.is_dir()), None)
        for directory in _directories(mount, groups["cpu"]) if mount is not None else []:
            quota_text, period_text = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
            if quota_text and period_text and int(quota_text) > 0:
                candidates.append((int(quota_text) / int(period_text), directory / "cpu.cfs_quota_us"))
    for cores, path in candidates:
        if tightest is None or cores < tightest[0]:
            tightest = (cores, str(path.relative_to(root)))
    return tightest


def _meminfo(root: Path) -> tuple[int | None, int | None]:
    total = available = None
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        name, _, value = line.partition(":")
        if name == "MemTotal":
            total = int(value.split()[0]) * 1024
        elif name == "MemAvailable":
            available = int(value.split()[0]) * 1024
    return total, available


def _memory_limit(root: Path) -> tuple[int, str] | None:
    """Bytes the tightest cgroup memory limit leaves, and its file."""
    groups = _cgroups(root)
    left: list[tuple[int, Path]] = []
    if "" in groups:
        for directory in _directories(root / "sys/fs/cgroup", groups[""]):
            limit = _bytes(_read(directory / "memory.max"))
            if limit is not None:
                used = _bytes(_read(directory / "memory.current")) or 0
                left.append((max(0, limit - used + _reclaimable(directory / "memory.stat")), directory / "memory.max"))
    if "memory" in groups:
        for directory in _directories(root / "sys/fs/cgroup/memory", groups["memory"]):
            limit = _bytes(_read(directory / "memory.limit_in_bytes"))
            if limit is not None:
                used = _bytes(_read(directory / "memory.usage_in_bytes")) or 0
                stat = directory / "memory.stat"
                left.append((max(0, limit - used + _reclaimable(stat)), directory / "memory.limit_in_bytes"))
    if not left:
        return None
    amount, path = min(left, key=lambda pair: pair[0])
    return amount, str(path.relative_to(root))


def _bytes(text: str | None) -> int | None:
    """A limit in bytes; None for none ("max", v1's near-2^63)."""
    if text is None or text == "max":
        return None
    value = int(text)
    return None if value >= _UNLIMITED else value


def _reclaimable(stat: Path) -> int:
    """Page cache the kernel gives back before it runs out (inactive files)."""
    for line in (_read(stat) or "").splitlines():
        name, _, value = line.partition(" ")
        if name in ("inactive_file", "total_inactive_file"):
            return int(value)
    return 0
